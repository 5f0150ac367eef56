"""Write the training and held-out data of the default model's heads.

Usage: ``python scripts/default_model/prepare_data.py --out DIR [--cache DIR]``

The sources (see ``sources.py``) are fetched into the cache folder; everything written is derived from them
deterministically, so two runs write the same bytes. A summary of the files, in Markdown, goes to stdout.

Choices:

* Held-out part: about 20% of the items, chosen by hashing ``collection:id`` (``corpora.is_held_out``); the
  editorials and Amazon reviews are split per document, so no document is on both sides.
* ``corpus-train.txt`` holds whole documents only. The movie-review and tweet snippets are one-sentence documents
  that would give next-sentence prediction only random pairs, so their training part goes to a separate
  ``corpus-snippets-train.txt`` (same format) that a recipe may add for masked-LM training.
* The QA builder's lexicon is learnt from training text only (training documents and snippets).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from corpora import (
    DOCUMENT_COLLECTIONS,
    MOVIE_REVIEWS,
    TWEETS,
    Document,
    documents,
    rated_sentences,
    sentiment_examples,
    split_held_out,
    write_classification_csv,
    write_pretraining_corpus,
)
from qa_builder import build_lexicon, build_qa_dataset, validate_squad
from sources import Sources, fetch_sources

QA_SEED = 0
QA_TRAIN_PER_SENTENCE = 3  # more training questions; the held-out set keeps one per sentence
EXTRA_SENTIMENT_COLLECTIONS = (TWEETS, *DOCUMENT_COLLECTIONS)


@dataclass(frozen=True)
class Written:
    """One written file, for the summary."""

    name: str
    contents: str
    count: int
    unit: str


def default_cache_dir() -> Path:
    """The folder the source archives are downloaded to when ``--cache`` is not given."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "bertserve" / "default-model-sources"


def write_sentiment(sources: Sources, out: Path) -> list[Written]:
    """Write the movie-review classification sets and the extra training set of the other collections."""
    train, held_out = split_held_out(sentiment_examples(sources, [MOVIE_REVIEWS]))
    extra_train, _ = split_held_out(sentiment_examples(sources, EXTRA_SENTIMENT_COLLECTIONS))
    sets = [
        ("sentiment-train.csv", "movie-review sentences, training part", train),
        ("sentiment-heldout.csv", "movie-review sentences, held out", held_out),
        ("sentiment-extra-train.csv", "tweets, Amazon and NYT sentences, training part", extra_train),
    ]
    return [
        Written(name, contents, write_classification_csv(out / name, examples), "examples")
        for name, contents, examples in sets
    ]


def write_corpora(sources: Sources, docs: Sequence[Document], out: Path) -> list[Written]:
    """Write the pretraining-format corpora: documents split train/held-out, and the training snippets."""
    sets: list[tuple[str, str, Sequence[Sequence[str]]]] = [
        (
            "corpus-train.txt",
            "NYT editorials and Amazon reviews, training documents",
            [doc.sentences for doc in docs if not doc.held_out],
        ),
        (
            "corpus-heldout.txt",
            "NYT editorials and Amazon reviews, held-out documents",
            [doc.sentences for doc in docs if doc.held_out],
        ),
        (
            "corpus-snippets-train.txt",
            "movie-review and tweet snippets, training part, one per document (for masked LM)",
            [[snippet] for snippet in training_snippets(sources)],
        ),
    ]
    return [
        Written(name, contents, write_pretraining_corpus(out / name, texts), "documents")
        for name, contents, texts in sets
    ]


def training_snippets(sources: Sources) -> list[str]:
    """Every training-side movie-review and tweet text, neutral ones included, in file order."""
    snippets = [item for collection in (MOVIE_REVIEWS, TWEETS) for item in rated_sentences(sources, collection)]
    return [item.text for item in snippets if not item.held_out]


def write_qa(sources: Sources, docs: Sequence[Document], out: Path) -> list[Written]:
    """Write the generated QA sets and the SQuAD fixture, each checked answer by answer."""
    train = [doc for doc in docs if not doc.held_out]
    held_out = [doc for doc in docs if doc.held_out]
    lexicon = build_lexicon([*(sentence for doc in train for sentence in doc.sentences), *training_snippets(sources)])
    fixture = {"version": "1.1", "data": sources.read_squad_fixture()["data"]}
    sets = [
        (
            "qa-train.json",
            f"questions generated from the training documents (up to {QA_TRAIN_PER_SENTENCE} per sentence)",
            build_qa_dataset(train, QA_SEED, lexicon, per_sentence=QA_TRAIN_PER_SENTENCE),
        ),
        (
            "qa-heldout.json",
            "questions generated from the held-out documents",
            build_qa_dataset(held_out, QA_SEED, lexicon),
        ),
        ("qa-squad-fixture.json", "the five SQuAD v1.1 questions of the allennlp test fixture", fixture),
    ]
    written = []
    for name, contents, dataset in sets:
        count = validate_squad(dataset)
        (out / name).write_text(json.dumps(dataset, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
        written.append(Written(name, contents, count, "questions"))
    return written


def summary(written: Sequence[Written]) -> str:
    """Render the Markdown summary of the written files."""
    lines = [
        "# Default model data",
        "",
        "| file | contents | count |",
        "| --- | --- | --- |",
        *(f"| `{item.name}` | {item.contents} | {item.count:,} {item.unit} |" for item in written),
        "",
        "Held out: about 20% by SHA-256 of `collection:id` (per document for NYT and Amazon). Sources: the",
        "hutto_ICWSM_2014 ground truth in the vaderSentiment 3.3.2 sdist, and allennlp 0.9.0's `squad.json` fixture.",
    ]
    return "\n".join(lines)


def prepare(out: Path, cache: Path) -> list[Written]:
    """Fetch the sources and write every file into ``out``; return what was written."""
    out.mkdir(parents=True, exist_ok=True)
    sources = fetch_sources(cache)
    docs = documents(sources)
    return [*write_sentiment(sources, out), *write_corpora(sources, docs, out), *write_qa(sources, docs, out)]


def main(argv: Sequence[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--out", type=Path, required=True, help="folder to write the data files to")
    parser.add_argument("--cache", type=Path, default=default_cache_dir(), help="folder for the downloaded archives")
    args = parser.parse_args(argv)
    print(summary(prepare(args.out, args.cache)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
