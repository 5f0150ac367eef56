"""Rated sentences, documents, the held-out split and the writers for the default model's training data.

Texts are lightly normalised the same way everywhere: the HTML entities the files carry (``&amp;``, ``&lt;``,
``&gt;``, ``&quot;``, ``&#38;``, some escaped twice) are decoded, the typewriter double quote ``''`` becomes ``"``,
and runs of white space (line breaks included) become one space.
"""

from __future__ import annotations

import csv
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

MOVIE_REVIEWS = "movie_reviews"
TWEETS = "tweets"
AMAZON_REVIEWS = "amazon_reviews"
NYT_EDITORIALS = "nyt_editorials"
COLLECTIONS = (MOVIE_REVIEWS, TWEETS, AMAZON_REVIEWS, NYT_EDITORIALS)
# Collections whose ids are ``<document>_<sentence>``; they are split per document.
DOCUMENT_COLLECTIONS = (NYT_EDITORIALS, AMAZON_REVIEWS)

HELD_OUT_MODULUS = 5

_ENTITIES = {"&amp;": "&", "&lt;": "<", "&gt;": ">", "&quot;": '"'}
_ENTITY_RE = re.compile("|".join(map(re.escape, _ENTITIES)) + r"|&#(\d{2,5});")
_SPACE_RE = re.compile(r"\s+")


class GroundTruthReader(Protocol):
    """Anything that returns a collection's ground-truth file as text (``sources.Sources`` does)."""

    def read_ground_truth(self, collection: str) -> str:
        """Return the tab-separated ``id, rating, text`` file of ``collection``."""
        ...


@dataclass(frozen=True)
class RatedSentence:
    """One human-rated sentence (or snippet) of a collection; ``rating`` is the mean rating from -4 to 4."""

    collection: str
    id: str
    rating: float
    text: str

    @property
    def label(self) -> str | None:
        """``"positive"`` or ``"negative"``; ``None`` for a neutral (exactly 0) rating."""
        if self.rating > 0:
            return "positive"
        if self.rating < 0:
            return "negative"
        return None

    @property
    def split_id(self) -> str:
        """The id the held-out split is decided on: the document id in document collections, else the own id."""
        return document_id(self.collection, self.id)

    @property
    def held_out(self) -> bool:
        """Whether this sentence belongs to the held-out part."""
        return is_held_out(self.collection, self.split_id)


@dataclass(frozen=True)
class Document:
    """A document of a document collection: its sentences in order."""

    collection: str
    id: str
    sentences: tuple[str, ...]

    @property
    def held_out(self) -> bool:
        """Whether this document (and so each of its sentences) belongs to the held-out part."""
        return is_held_out(self.collection, self.id)


def normalize_text(text: str) -> str:
    """Decode HTML entities (repeatedly), turn ``''`` into ``"`` and collapse white space."""
    decoded = None
    while decoded != text:  # some lines are escaped twice ("&amp;amp;")
        decoded, text = text, _ENTITY_RE.sub(_decode_entity, text)
    return _SPACE_RE.sub(" ", text.replace("''", '"')).strip()


def _decode_entity(match: re.Match[str]) -> str:
    return chr(int(match.group(1))) if match.group(1) else _ENTITIES[match.group()]


def is_held_out(collection: str, item_id: str) -> bool:
    """Return whether ``item_id`` (a sentence id, or a document id in nyt/amazon) is held out (about 20%)."""
    digest = hashlib.sha256(f"{collection}:{item_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % HELD_OUT_MODULUS == 0


def document_id(collection: str, item_id: str) -> str:
    """Return the document part of a ``<document>_<sentence>`` id in document collections, else ``item_id``."""
    if collection in DOCUMENT_COLLECTIONS:
        return item_id.split("_", 1)[0]
    return item_id


def parse_ground_truth(collection: str, text: str) -> list[RatedSentence]:
    """Parse a ground-truth file (``id<TAB>rating<TAB>text`` lines) into rated sentences, in file order."""
    sentences = []
    for line_number, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) < 3:
            raise ValueError(f"{collection} line {line_number}: expected id, rating and text: {line!r}")
        item_id, rating, sentence = fields[0].strip(), float(fields[1]), normalize_text("\t".join(fields[2:]))
        if sentence:
            sentences.append(RatedSentence(collection, item_id, rating, sentence))
    return sentences


def rated_sentences(sources: GroundTruthReader, collection: str) -> list[RatedSentence]:
    """Return every rated sentence of ``collection``, neutral ones included."""
    return parse_ground_truth(collection, sources.read_ground_truth(collection))


def sentiment_examples(sources: GroundTruthReader, collections: Sequence[str] = COLLECTIONS) -> list[RatedSentence]:
    """Return the labelled (non-neutral) sentences of ``collections``, collection by collection in file order."""
    return [
        sentence
        for collection in collections
        for sentence in rated_sentences(sources, collection)
        if sentence.label is not None
    ]


def split_held_out(items: Iterable[RatedSentence]) -> tuple[list[RatedSentence], list[RatedSentence]]:
    """Split sentences into (training, held-out), keeping their order."""
    train: list[RatedSentence] = []
    held_out: list[RatedSentence] = []
    for item in items:
        (held_out if item.held_out else train).append(item)
    return train, held_out


def group_documents(sentences: Iterable[RatedSentence]) -> list[Document]:
    """Group ``<document>_<sentence>`` sentences into documents, ordered by numeric document and sentence index."""
    grouped: dict[tuple[str, str], list[tuple[int, str]]] = {}
    for sentence in sentences:
        doc, _, index = sentence.id.partition("_")
        grouped.setdefault((sentence.collection, doc), []).append((_as_int(index), sentence.text))
    ordered = sorted(grouped.items(), key=lambda item: (item[0][0], _as_int(item[0][1]), item[0][1]))
    return [Document(collection, doc, tuple(text for _, text in sorted(rows))) for (collection, doc), rows in ordered]


def _as_int(value: str) -> int:
    return int(value) if value.isdigit() else -1


def documents(sources: GroundTruthReader, collections: Sequence[str] = DOCUMENT_COLLECTIONS) -> list[Document]:
    """Return the documents of ``collections`` (nyt editorials, then amazon reviews), all sentences in order."""
    result: list[Document] = []
    for collection in collections:
        result.extend(group_documents(rated_sentences(sources, collection)))
    return result


def write_classification_csv(path: Path, examples: Iterable[RatedSentence]) -> int:
    """Write ``text,label`` rows (neutral examples skipped); return the number of rows written."""
    count = 0
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["text", "label"])
        for example in examples:
            if example.label is not None:
                writer.writerow([example.text, example.label])
                count += 1
    return count


def write_pretraining_corpus(path: Path, docs: Iterable[Sequence[str]]) -> int:
    """Write documents in BERT's pretraining format (a sentence a line, a blank line between documents).

    Returns the number of documents written; empty sentences and empty documents are skipped.
    """
    count = 0
    with path.open("w", encoding="utf-8", newline="\n") as handle:
        for doc in docs:
            lines = [line for line in (_SPACE_RE.sub(" ", sentence).strip() for sentence in doc) if line]
            if not lines:
                continue
            if count:
                handle.write("\n")
            handle.write("\n".join(lines) + "\n")
            count += 1
    return count
