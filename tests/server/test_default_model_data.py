"""Unit tests of the default model's data builders (scripts/default_model), on small inline examples."""

from __future__ import annotations

import csv
import hashlib
import io
import json
import random
import sys
import tarfile
import zipfile
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "scripts" / "default_model"))

import corpora  # noqa: E402
import prepare_data  # noqa: E402
import qa_builder  # noqa: E402
import sources  # noqa: E402

GROUND_TRUTH = {
    "movie_reviews": "\ufeff1\t2.5\tA ''great'' film.\n2\t-1.5\tA dull,\tslow film.\n3\t0\tA film.\n",
    "tweets": "1\t1.2\tLove it &amp;amp; more\n2\t-0.4\tMeh &lt;3\n",
    "amazon_reviews": "2_1\t1.0\tthe second review.\n10_2\t-0.5\tlater sentence.\n10_1\t0\tfirst sentence.\n",
    "nyt_editorials": "1_1\t0.4\tThe city hired 50 inspectors.\n1_3\t-0.2\tThey start in May 2024.\n",
}
SQUAD = {"data": [{"title": "T", "paragraphs": [{"context": "Paris is big.", "qas": [
    {"id": "q1", "question": "What is big?", "answers": [{"text": "Paris", "answer_start": 0}]}
]}]}]}  # fmt: skip


def _tar_bytes(members: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def make_archives(folder: Path, ground_truth: dict[str, str] = GROUND_TRUTH) -> sources.Sources:
    """Fake vader sdist (with the nested hutto tarball) and allennlp wheel, laid out like the real ones."""
    files = {
        f"hutto_ICWSM_2014/{sources.GROUND_TRUTH_FILES[name]}_GroundTruth.txt": text.encode()
        for name, text in ground_truth.items()
    }
    sdist = folder / sources.VADER_ARCHIVE
    sdist.write_bytes(_tar_bytes({sources.VADER_RESOURCES: _tar_bytes(files)}))
    wheel = folder / sources.ALLENNLP_ARCHIVE
    with zipfile.ZipFile(wheel, "w") as archive:
        archive.writestr(sources.SQUAD_FIXTURE, json.dumps(SQUAD))
    return sources.Sources(vader_sdist=sdist, allennlp_wheel=wheel)


@pytest.fixture
def fake_sources(tmp_path: Path) -> sources.Sources:
    return make_archives(tmp_path)


# --- sources ---------------------------------------------------------------------------------------------------------


def test_readers_open_members_inside_the_archives(fake_sources: sources.Sources) -> None:
    assert fake_sources.read_ground_truth("tweets").startswith("1\t1.2\tLove it")
    assert fake_sources.read_squad_fixture() == SQUAD
    with pytest.raises(KeyError):
        fake_sources.read_ground_truth("unknown")


def test_decode_text_drops_bom_and_falls_back_per_line() -> None:
    assert sources.decode_text(b"\xef\xbb\xbfcaf\xc3\xa9\n") == "café\n"
    assert sources.decode_text("naïve\n".encode() + b"clich\xe9 \x93quoted\x94\n") == "naïve\ncliché “quoted”\n"


def test_fetch_sources_uses_the_cache_without_pip(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_archives(tmp_path)
    monkeypatch.setattr(sources, "VADER_SHA256", _sha256(fake.vader_sdist))
    monkeypatch.setattr(sources, "ALLENNLP_SHA256", _sha256(fake.allennlp_wheel))
    monkeypatch.setattr(sources, "_pip_download", _fail)
    assert sources.fetch_sources(tmp_path) == fake


def test_fetch_sources_downloads_verifies_and_moves_into_the_cache(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    index = tmp_path / "index"
    index.mkdir()
    fake = make_archives(index, {})
    calls: list[list[str]] = []

    def download(dest: Path, pip_args: list[str]) -> None:
        calls.append(pip_args)
        source = fake.vader_sdist if "vaderSentiment==3.3.2" in pip_args else fake.allennlp_wheel
        (dest / source.name).write_bytes(source.read_bytes())

    monkeypatch.setattr(sources, "VADER_SHA256", _sha256(fake.vader_sdist))
    monkeypatch.setattr(sources, "ALLENNLP_SHA256", _sha256(fake.allennlp_wheel))
    monkeypatch.setattr(sources, "_pip_download", download)
    cache = tmp_path / "cache"
    fetched = sources.fetch_sources(cache)
    assert calls == [["--no-binary", ":all:", "vaderSentiment==3.3.2"], ["allennlp==0.9.0"]]
    assert sorted(path.name for path in cache.iterdir()) == sorted([sources.VADER_ARCHIVE, sources.ALLENNLP_ARCHIVE])
    assert fetched.read_squad_fixture() == SQUAD


def test_fetch_sources_refuses_a_file_with_another_digest(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    make_archives(tmp_path)
    monkeypatch.setattr(sources, "_pip_download", _fail)
    with pytest.raises(ValueError, match="does not match the pinned"):
        sources.fetch_sources(tmp_path)


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _fail(*_: Any) -> None:
    raise AssertionError("pip must not run")


# --- corpora ---------------------------------------------------------------------------------------------------------


def test_normalize_text() -> None:
    assert corpora.normalize_text("  ''Conan''\n is &amp;amp; &#38; &lt;b&gt;\tok ") == '"Conan" is & & <b> ok'


def test_parse_ground_truth_keeps_order_and_normalises() -> None:
    parsed = corpora.parse_ground_truth("movie_reviews", GROUND_TRUTH["movie_reviews"].lstrip("\ufeff"))
    assert [(item.id, item.rating, item.text, item.label) for item in parsed] == [
        ("1", 2.5, 'A "great" film.', "positive"),
        ("2", -1.5, "A dull, slow film.", "negative"),
        ("3", 0.0, "A film.", None),
    ]
    with pytest.raises(ValueError, match="line 1"):
        corpora.parse_ground_truth("tweets", "1\tno text\n")


def test_sentiment_examples_drop_neutral(fake_sources: sources.Sources) -> None:
    examples = corpora.sentiment_examples(fake_sources)
    assert [(item.collection, item.id) for item in examples] == [
        ("movie_reviews", "1"),
        ("movie_reviews", "2"),
        ("tweets", "1"),
        ("tweets", "2"),
        ("amazon_reviews", "2_1"),
        ("amazon_reviews", "10_2"),
        ("nyt_editorials", "1_1"),
        ("nyt_editorials", "1_3"),
    ]
    assert examples[2].text == "Love it & more" and examples[3].text == "Meh <3"


def test_held_out_split_is_stable_and_about_a_fifth() -> None:
    flags = [corpora.is_held_out("movie_reviews", str(index)) for index in range(10_000)]
    assert flags == [corpora.is_held_out("movie_reviews", str(index)) for index in range(10_000)]
    assert 0.18 < sum(flags) / len(flags) < 0.22
    assert flags[:20] != [corpora.is_held_out("tweets", str(index)) for index in range(20)]


def test_documents_are_split_as_a_whole() -> None:
    held_out_doc = next(str(doc) for doc in range(1, 100) if corpora.is_held_out("nyt_editorials", str(doc)))
    sentences = [corpora.RatedSentence("nyt_editorials", f"{held_out_doc}_{index}", 1.0, "x") for index in range(1, 30)]
    assert all(sentence.held_out for sentence in sentences)
    train, held_out = corpora.split_held_out(sentences)
    assert (train, held_out) == ([], sentences)
    movie = corpora.RatedSentence("movie_reviews", "7", 1.0, "x")
    assert movie.split_id == "7" and movie.held_out == corpora.is_held_out("movie_reviews", "7")


def test_documents_group_and_order_sentences(fake_sources: sources.Sources) -> None:
    docs = corpora.documents(fake_sources)
    assert [(doc.collection, doc.id, doc.sentences) for doc in docs] == [
        ("nyt_editorials", "1", ("The city hired 50 inspectors.", "They start in May 2024.")),
        ("amazon_reviews", "2", ("the second review.",)),
        ("amazon_reviews", "10", ("first sentence.", "later sentence.")),
    ]
    assert docs[0].held_out == corpora.is_held_out("nyt_editorials", "1")


def test_write_classification_csv_quotes_properly(tmp_path: Path) -> None:
    examples = [
        corpora.RatedSentence("tweets", "1", 1.0, 'He said "yes", then left'),
        corpora.RatedSentence("tweets", "2", 0.0, "neutral"),
        corpora.RatedSentence("tweets", "3", -2.0, "bad"),
    ]
    path = tmp_path / "out.csv"
    assert corpora.write_classification_csv(path, examples) == 2
    assert path.read_text(encoding="utf-8") == 'text,label\n"He said ""yes"", then left",positive\nbad,negative\n'
    with path.open(newline="", encoding="utf-8") as handle:
        assert list(csv.DictReader(handle))[0] == {"text": 'He said "yes", then left', "label": "positive"}


def test_write_pretraining_corpus_format(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    docs = [["First one.", "Second\nline  here."], [], ["  "], ["Other doc."]]
    assert corpora.write_pretraining_corpus(path, docs) == 2
    assert path.read_text(encoding="utf-8") == "First one.\nSecond line here.\n\nOther doc.\n"


# --- qa_builder ------------------------------------------------------------------------------------------------------

TEXT = [
    "Mr. Rust said he had come in peace.",
    "The committee will meet in Boston next week.",
    "The city hired about 50 inspectors last year.",
    "In 1858, the girl saw a vision in the grotto.",
    "She bought the camera for her sister.",
    "He said the plan was good.",
    "They said it was fine.",
    "We found the camera in the car.",
]


@pytest.fixture
def lexicon() -> qa_builder.Lexicon:
    return qa_builder.build_lexicon(TEXT)


def _questions(sentence: str, lexicon: qa_builder.Lexicon) -> dict[str, str]:
    found = qa_builder.questions_for_sentence(sentence, 0, lexicon)
    return {sentence[question.span.start : question.span.end]: question.text for question in found}


def test_lexicon_learns_word_classes(lexicon: qa_builder.Lexicon) -> None:
    assert {"camera", "committee", "grotto"} <= lexicon.nominal_words
    assert {"said", "bought", "found"} <= lexicon.verbal_words
    assert lexicon.person_names == {"Rust"}


def test_tokenize_keeps_abbreviations_and_initials() -> None:
    tokens = [token.text for token in qa_builder.tokenize("Mr. J. Smith met A.T.&T. in Dec. 1990 for $5.")]
    assert tokens == ["Mr.", "J.", "Smith", "met", "A.T.&T.", "in", "Dec.", "1990", "for", "$5", "."]


def test_numeric_spans_types_and_masks() -> None:
    sentence = "In 1990 about 50 contestants paid $3 million for 10 years."
    spans = {sentence[span.start : span.end]: span for span in qa_builder.numeric_spans(sentence)}
    assert spans["1990"].wh == "when" and sentence[spans["1990"].mask_start : spans["1990"].mask_end] == "In 1990"
    count = spans["about 50"]
    assert (count.kind, count.wh, sentence[count.mask_start : count.mask_end]) == (
        "count",
        "how many contestants",
        "about 50 contestants",
    )
    assert spans["$3 million"].wh == "how much"
    assert spans["10 years"].wh == "how long"
    assert "$10" not in {sentence[span.start : span.end] for span in qa_builder.numeric_spans("A $10 bill fell.")}


def test_subject_questions_put_the_wh_word_first(lexicon: qa_builder.Lexicon) -> None:
    assert _questions("Mr. Rust said he had come in peace.", lexicon)["Mr. Rust"] == "Who said he had come in peace?"
    assert _questions(TEXT[2], lexicon)["The city"] == "What hired about 50 inspectors last year?"


def test_inversion_and_do_support(lexicon: qa_builder.Lexicon) -> None:
    assert _questions(TEXT[1], lexicon)["Boston"] == "Where will the committee meet next week?"
    assert _questions(TEXT[2], lexicon)["about 50"] == "How many inspectors did the city hire last year?"
    assert _questions(TEXT[3], lexicon)["1858"] == "When did the girl see a vision in the grotto?"
    assert _questions(TEXT[4], lexicon)["the camera"] == "What did she buy for her sister?"


def test_in_place_question_when_fronting_is_unsafe(lexicon: qa_builder.Lexicon) -> None:
    assert _questions("He said the plan was good.", lexicon)["the plan"] == "He said what was good?"


def test_short_sentences_and_questions_give_nothing(lexicon: qa_builder.Lexicon) -> None:
    assert qa_builder.questions_for_sentence("The city hired Bob.", 0, lexicon) == []
    assert qa_builder.questions_for_sentence("Did the city hire about 50 inspectors?", 0, lexicon) == []


def test_context_window_budget_and_exclusion() -> None:
    sentences = [f"Sentence {index} " + "word " * 18 for index in range(10)]
    for seed in range(20):
        window = qa_builder.context_window(sentences, 5, random.Random(seed), excluded=4)
        assert window is not None
        first, last = window
        assert first == 5 <= last - 1 and sum(len(s.split()) for s in sentences[first:last]) <= 120
    assert qa_builder.context_window(["word " * 200], 0, random.Random(0)) is None


class Doc:
    """A minimal document for the QA builder."""

    def __init__(self, id: str, sentences: list[str]) -> None:
        self.collection = "nyt_editorials"
        self.id = id
        self.sentences = sentences


DOCS = [
    Doc("1", [*TEXT[:4], "Nothing to ask.", *TEXT[4:], "Mr. Rust went home to Boston after the meeting."]),
    Doc("2", ["The council approved $5 million for the park.", "Mayor Koch praised the decision on Monday."]),
]


def _qas(dataset: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [(p["context"], qa) for article in dataset["data"] for p in article["paragraphs"] for qa in p["qas"]]


def test_build_qa_dataset_is_valid_squad_and_deterministic(lexicon: qa_builder.Lexicon) -> None:
    dataset = qa_builder.build_qa_dataset(DOCS, seed=3, lexicon=lexicon)
    assert dataset["version"] == "1.1"
    assert json.dumps(dataset) == json.dumps(qa_builder.build_qa_dataset(DOCS, seed=3, lexicon=lexicon))
    qas = _qas(dataset)
    assert len(qas) >= 8 and len({qa["id"] for _, qa in qas}) == len(qas)
    for context, qa in qas:
        (answer,) = qa["answers"]
        assert context[answer["answer_start"] :].startswith(answer["text"])
        assert qa["question"].endswith("?") and answer["text"].lower() not in qa["question"].lower()
        assert len(context.split()) <= qa_builder.MAX_CONTEXT_WORDS
    assert qa_builder.validate_squad(dataset) == len(qas)
    assert {article["title"] for article in dataset["data"]} == {"nyt_editorials_1", "nyt_editorials_2"}


def test_recurring_span_answers_at_the_other_occurrence(lexicon: qa_builder.Lexicon) -> None:
    dataset = qa_builder.build_qa_dataset(DOCS[:1], seed=0, lexicon=lexicon, recurring_rate=1.0)
    recurring = [(context, qa) for context, qa in _qas(dataset) if qa["id"].endswith("-r")]
    assert recurring
    for context, qa in recurring:
        question_sentence = DOCS[0].sentences[int(qa["id"].split("-")[2])]
        assert question_sentence not in context


def test_validate_squad_rejects_a_wrong_offset() -> None:
    bad = json.loads(json.dumps(SQUAD))
    bad["data"][0]["paragraphs"][0]["qas"][0]["answers"][0]["answer_start"] = 1
    with pytest.raises(ValueError, match="q1"):
        qa_builder.validate_squad(bad)


# --- prepare_data ----------------------------------------------------------------------------------------------------


def test_prepare_writes_every_file_deterministically(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = make_archives(tmp_path)
    monkeypatch.setattr(prepare_data, "fetch_sources", lambda cache: fake)
    first = prepare_data.prepare(tmp_path / "a", tmp_path)
    prepare_data.prepare(tmp_path / "b", tmp_path)
    names = [item.name for item in first]
    assert sorted(path.name for path in (tmp_path / "a").iterdir()) == sorted(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    counts = {item.name: item.count for item in first}
    assert counts["sentiment-train.csv"] + counts["sentiment-heldout.csv"] == 2
    assert counts["corpus-train.txt"] + counts["corpus-heldout.txt"] == 3
    fixture = json.loads((tmp_path / "a" / "qa-squad-fixture.json").read_text(encoding="utf-8"))
    assert fixture == {"version": "1.1", "data": SQUAD["data"]}
    summary = prepare_data.summary(first)
    assert all(f"`{name}`" in summary for name in names)
