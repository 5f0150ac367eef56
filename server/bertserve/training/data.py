"""Training and evaluation data readers, one per task's usual format.

- classification: CSV or TSV with a header naming ``text`` and ``label``
  columns, or JSON Lines objects with those keys; any label set.
- next-sentence and masked-LM: plain text in BERT's pretraining format, one
  sentence per line and a blank line between documents.
- question answering: SQuAD v1.1 or v2.0 JSON.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path


class DataError(ValueError):
    """The data file cannot be used; the message names the file and the line."""


@dataclass(frozen=True)
class LabeledText:
    """One classification example."""

    text: str
    label: str


@dataclass(frozen=True)
class QuestionExample:
    """One SQuAD question: gold answers as (text, character start) pairs."""

    id: str
    question: str
    context: str
    answers: tuple[tuple[str, int], ...]

    @property
    def is_impossible(self) -> bool:
        return not self.answers


Document = list[str]


def read_labeled_texts(path: Path, *, text_field: str = "text", label_field: str = "label") -> list[LabeledText]:
    """Read a CSV, TSV (by suffix ``.tsv``) or JSON Lines (``.jsonl``) file."""
    if path.suffix == ".jsonl":
        rows = _read_jsonl(path)
    else:
        with path.open(newline="", encoding="utf-8") as handle:
            rows = list(csv.DictReader(handle, delimiter="\t" if path.suffix == ".tsv" else ","))
    examples = []
    for number, row in enumerate(rows, start=2 if path.suffix != ".jsonl" else 1):
        text, label = row.get(text_field), row.get(label_field)
        if text is None or label is None:
            raise DataError(f"{path}:{number}: needs fields {text_field!r} and {label_field!r}; got {sorted(row)}")
        if not str(text).strip():
            raise DataError(f"{path}:{number}: empty {text_field!r}")
        examples.append(LabeledText(str(text), str(label)))
    if not examples:
        raise DataError(f"{path}: no examples")
    return examples


def _read_jsonl(path: Path) -> list[dict[str, object]]:
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as error:
                    raise DataError(f"{path}:{number}: not JSON ({error.msg})") from None
    return rows


def read_documents(path: Path) -> list[Document]:
    """Documents of sentences: one sentence per line, blank lines between documents."""
    documents: list[Document] = []
    current: Document = []
    with path.open(encoding="utf-8") as handle:
        for line in handle:
            sentence = line.strip()
            if sentence:
                current.append(sentence)
            elif current:
                documents.append(current)
                current = []
    if current:
        documents.append(current)
    if not documents:
        raise DataError(f"{path}: no text")
    return documents


def read_squad(path: Path) -> list[QuestionExample]:
    """Questions of a SQuAD v1.1 or v2.0 file; answers are checked against the context."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        articles = raw["data"]
    except (json.JSONDecodeError, KeyError, TypeError) as error:
        raise DataError(f"{path}: not a SQuAD JSON file ({error})") from None
    examples = []
    for article in articles:
        for paragraph in article["paragraphs"]:
            context = paragraph["context"]
            for qa in paragraph["qas"]:
                answers = []
                for answer in [] if qa.get("is_impossible") else qa.get("answers", []):
                    text, start = answer["text"], int(answer["answer_start"])
                    if context[start : start + len(text)] != text:
                        raise DataError(f"{path}: question {qa['id']}: answer {text!r} is not at {start}")
                    answers.append((text, start))
                examples.append(QuestionExample(str(qa["id"]), qa["question"], context, tuple(answers)))
    if not examples:
        raise DataError(f"{path}: no questions")
    return examples
