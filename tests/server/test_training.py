"""train-head and eval-head end to end on a tiny random checkpoint.

Each task trains on small generated data; the head file then loads into a
real server, whose answers must equal the trained module's own outputs on
the same encoder (computed here with transformers' BertModel directly).
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import numpy as np
import pytest
import torch
from bertserve.background import BackgroundServer
from bertserve.cli import main
from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.plugin.head import EncoderOutputs
from bertserve.plugin.headfile import read_head_metadata
from bertserve.plugin.modules import EncoderHead, HeadArchitecture, additive_attention_mask
from bertserve.training import (
    FeatureOptions,
    TrainingOptions,
    evaluate_head,
    features as features_module,
    load_served_head,
    train_head,
)
from bertserve.training.data import QuestionExample, read_documents
from bertserve.training.examples import IS_NEXT, masked_lm_rows, next_sentence_pairs, question_windows
from bertserve_client import BertServeClient
from safetensors import safe_open
from tiny_models import make_checkpoint
from transformers import BertModel

GOOD = "good great fun funny love liked".split()
BAD = "bad terrible boring hate".split()
NOUNS = "the movie film book story plot actor music".split()
THINGS = "cat dog bird tree house car road water fire sun moon star sky rain snow".split()


@pytest.fixture(scope="module")
def bare_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny encoder without MLM or NSP weights, like the default model."""
    return make_checkpoint(tmp_path_factory.mktemp("bare-bert"), seed=3, pretraining_heads=False)


@pytest.fixture(scope="module")
def encoder(bare_checkpoint: Path) -> SharedEncoder:
    return SharedEncoder.load(str(bare_checkpoint), device="cpu")


def _reviews(rng: random.Random, count: int) -> str:
    """CSV of texts whose label is decided by two sentiment words among nouns."""
    lines = ["text,label"]
    for _ in range(count):
        positive = rng.random() < 0.5
        words = rng.sample(GOOD if positive else BAD, 2) + rng.sample(NOUNS, 3)
        rng.shuffle(words)
        lines.append(f"{' '.join(words)},{'positive' if positive else 'negative'}")
    return "\n".join(lines) + "\n"


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("data")
    rng = random.Random(0)
    (folder / "reviews.csv").write_text(_reviews(random.Random(1), 240))
    (folder / "reviews-heldout.csv").write_text(_reviews(random.Random(2), 60))
    documents = ["\n".join(" ".join(rng.sample(THINGS, 5)) + " ." for _ in range(rng.randint(3, 7))) for _ in range(40)]
    (folder / "corpus.txt").write_text("\n\n".join(documents) + "\n")
    articles = []
    for i in range(120):
        name, place = rng.choice(["john", "mary"]), rng.choice(["paris", "berlin", "rome", "home", "school"])
        filler = " ".join(rng.sample(THINGS, 4))
        context = f"the {filler} . {name} went to {place} . the dog is old ."
        qa = {"id": f"q{i}", "question": f"where did {name} go ?", "answers": [{"text": place, "answer_start": 0}]}
        qa["answers"][0]["answer_start"] = context.index(f" {place} ") + 1
        articles.append({"title": f"t{i}", "paragraphs": [{"context": context, "qas": [qa]}]})
    (folder / "squad.json").write_text(json.dumps({"version": "1.1", "data": articles}))
    return {"classification": folder / "reviews.csv", "heldout": folder / "reviews-heldout.csv"} | {
        "corpus": folder / "corpus.txt",
        "squad": folder / "squad.json",
    }


FAST = TrainingOptions(epochs=6, learning_rate=1e-2, layer_learning_rate=1e-3, patience=6, seed=0)


def _reference_outputs(checkpoint: Path, encoder: SharedEncoder, texts: list[tuple[str, ...]]) -> list[EncoderOutputs]:
    """Encoder outputs per input from transformers' own BertModel, one at a time."""
    model = BertModel.from_pretrained(str(checkpoint)).eval()
    outputs = []
    for text in texts:
        encoded = encoder.tokenizer(*text, return_tensors="pt")
        with torch.no_grad():
            out = model(**encoded, output_hidden_states=True)
        outputs.append(
            EncoderOutputs(out.last_hidden_state, out.pooler_output, encoded["attention_mask"], out.hidden_states)
        )
    return outputs


@pytest.mark.parametrize(
    "architecture",
    [
        HeadArchitecture(pooling="first"),
        HeadArchitecture(pooling="mean", layer_mix=True, mlp_hidden=16),
        HeadArchitecture(pooling="pooled", private_layers=1),
    ],
    ids=["first-linear", "mean-mix-mlp", "pooled-private1"],
)
def test_trained_classifier_serves_what_was_trained(
    bare_checkpoint: Path, encoder: SharedEncoder, data: dict[str, Path], tmp_path: Path, architecture: HeadArchitecture
) -> None:
    trained = train_head("sentiment", encoder, data["classification"], architecture=architecture, options=FAST)
    path = tmp_path / "sentiment.safetensors"
    trained.save(path)
    texts = ["good fun movie", "the plot was boring and bad", "a great story with music"]
    reference = _reference_outputs(bare_checkpoint, encoder, [(t,) for t in texts])
    config = ServerConfig(model=str(bare_checkpoint), head_files={"sentiment": path}, device="cpu", port=0)
    with BackgroundServer(config) as running, BertServeClient(running.address) as client:
        served = client.sentiment(texts)
    module = trained.module
    assert isinstance(module, EncoderHead)
    for result, outputs in zip(served, reference):
        with torch.no_grad():
            probs = module(module.select_features(outputs)).softmax(dim=-1)[0]
        scores = {item.label: item.score for item in result.scores}
        expected = dict(zip(trained.metadata.labels, probs.tolist()))
        assert scores == pytest.approx(expected, abs=1e-5)


def test_trained_next_sentence_head_serves_what_was_trained(
    bare_checkpoint: Path, encoder: SharedEncoder, data: dict[str, Path], tmp_path: Path
) -> None:
    trained = train_head("next-sentence", encoder, data["corpus"], options=FAST)
    path = tmp_path / "nsp.safetensors"
    trained.save(path)
    pairs = [("the cat sat .", "the dog ran ."), ("a red car .", "snow and rain fell on the road .")]
    reference = _reference_outputs(bare_checkpoint, encoder, pairs)
    config = ServerConfig(model=str(bare_checkpoint), head_files={"next-sentence": path}, device="cpu", port=0)
    with BackgroundServer(config) as running, BertServeClient(running.address) as client:
        served = [client.next_sentence(first, second).is_next_probability for first, second in pairs]
    module = trained.module
    assert isinstance(module, EncoderHead)
    for probability, outputs in zip(served, reference):
        with torch.no_grad():
            expected = module(module.select_features(outputs)).softmax(dim=-1)[0, IS_NEXT]
        assert probability == pytest.approx(float(expected), abs=1e-5)


@pytest.mark.parametrize(("layer_mix", "private_layers"), [(False, 0), (True, 0), (False, 1)])
def test_trained_masked_lm_serves_what_was_trained(
    bare_checkpoint: Path,
    encoder: SharedEncoder,
    data: dict[str, Path],
    tmp_path: Path,
    layer_mix: bool,
    private_layers: int,
) -> None:
    architecture = HeadArchitecture(pooling="tokens", layer_mix=layer_mix, private_layers=private_layers)
    trained = train_head("fill-mask", encoder, data["corpus"], architecture=architecture, options=FAST, copies=2)
    path = tmp_path / "mlm.safetensors"
    trained.save(path)
    texts = ["the cat and the [MASK] .", "[MASK] dog ran to the house ."]
    reference = _reference_outputs(bare_checkpoint, encoder, [(t,) for t in texts])
    config = ServerConfig(model=str(bare_checkpoint), head_files={"fill-mask": path}, device="cpu", port=0)
    with BackgroundServer(config) as running, BertServeClient(running.address) as client:
        served = [client.fill_mask(text, top_k=5).masks[0] for text in texts]
    for mask, outputs in zip(served, reference):
        with torch.no_grad():
            at_mask = torch.tensor([mask.token_index])
            probs = trained.module(trained.module.select_features(outputs, torch.tensor([0]), at_mask))[0]
            probs = probs.softmax(dim=-1)
        values, ids = probs.topk(5)
        assert [p.token_id for p in mask.predictions] == ids.tolist()
        assert [p.score for p in mask.predictions] == pytest.approx(values.tolist(), abs=1e-5)
    # The decoder is the encoder's embedding matrix, never a copy in the file.
    extra = {"mix.layer_weights", "mix.layer_scale"} if layer_mix else set()
    extra |= {name for name in trained.module.state_dict() if name.startswith("private_layers.0.")}
    assert bool(extra) == (layer_mix or private_layers > 0)
    assert set(trained.module.state_dict()) == extra | {
        "transform.dense.weight",
        "transform.dense.bias",
        "transform.LayerNorm.weight",
        "transform.LayerNorm.bias",
        "bias",
    }


@pytest.mark.parametrize("private_layers", [0, 1])
def test_trained_span_head_serves_what_was_trained(
    bare_checkpoint: Path, encoder: SharedEncoder, data: dict[str, Path], tmp_path: Path, private_layers: int
) -> None:
    architecture = HeadArchitecture(pooling="tokens", private_layers=private_layers)
    trained = train_head("question-answering", encoder, data["squad"], architecture=architecture, options=FAST)
    path = tmp_path / "qa.safetensors"
    trained.save(path)
    question, context = "where did mary go ?", "the sun is big . mary went to rome . the dog is old ."
    reference = _reference_outputs(bare_checkpoint, encoder, [(question, context)])[0]
    config = ServerConfig(model=str(bare_checkpoint), head_files={"question-answering": path}, device="cpu", port=0)
    with BackgroundServer(config) as running, BertServeClient(running.address) as client:
        best = client.answer(question, context, top_k=1).answers[0]
    module = trained.module
    assert isinstance(module, EncoderHead)
    with torch.no_grad():
        logits = module(module.select_features(reference))[0].numpy()
    sequence_ids = encoder.tokenizer(question, context).sequence_ids()
    allowed = np.array([i == 0 or sid == 1 for i, sid in enumerate(sequence_ids)])
    start = np.exp(np.where(allowed, logits[:, 0], -np.inf) - logits[allowed, 0].max())
    end = np.exp(np.where(allowed, logits[:, 1], -np.inf) - logits[allowed, 1].max())
    start, end = start / start.sum(), end / end.sum()
    context_tokens = [i for i, sid in enumerate(sequence_ids) if sid == 1]
    spans = [(start[s] * end[e], s, e) for s in context_tokens for e in context_tokens if 0 <= e - s < 15]
    expected_score = max(spans)[0]
    assert best.score == pytest.approx(float(expected_score), rel=1e-4)


def test_training_learns_and_eval_head_measures_it(
    bare_checkpoint: Path, encoder: SharedEncoder, data: dict[str, Path], tmp_path: Path
) -> None:
    options = TrainingOptions(epochs=30, learning_rate=1e-2, patience=5, seed=0)
    # The embedding layer still names the words, so the layer mix finds them even in a random encoder.
    arch = HeadArchitecture("mean", layer_mix=True, mlp_hidden=32)
    trained = train_head("sentiment", encoder, data["classification"], architecture=arch, options=options)
    path = tmp_path / "sentiment.safetensors"
    trained.save(path)
    head = load_served_head("sentiment", encoder, path, ServerConfig(model=str(bare_checkpoint), device="cpu"))
    metrics = evaluate_head("sentiment", head, encoder, data["heldout"])
    assert metrics["accuracy"] >= 0.9 and metrics["examples"] == 60
    qa = train_head("question-answering", encoder, data["squad"], options=options)
    qa_path = tmp_path / "qa.safetensors"
    qa.save(qa_path)
    qa_head = load_served_head("question-answering", encoder, qa_path, ServerConfig(model=str(bare_checkpoint)))
    # Picking the place among the ~15 context tokens by chance scores under 10.
    assert evaluate_head("question-answering", qa_head, encoder, data["squad"])["exact_match"] >= 70.0


def test_same_seed_gives_the_same_head(encoder: SharedEncoder, data: dict[str, Path]) -> None:
    arch = HeadArchitecture(pooling="mean", mlp_hidden=8)
    first = train_head("sentiment", encoder, data["classification"], architecture=arch, options=FAST)
    second = train_head("sentiment", encoder, data["classification"], architecture=arch, options=FAST)
    other = train_head(
        "sentiment", encoder, data["classification"], architecture=arch, options=TrainingOptions(epochs=6, seed=1)
    )
    for name, tensor in first.module.state_dict().items():
        assert torch.equal(tensor, second.module.state_dict()[name]), name
    assert any(not torch.equal(t, other.module.state_dict()[n]) for n, t in first.module.state_dict().items())


def test_features_are_cached_and_reused(
    encoder: SharedEncoder, data: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = []
    original = features_module.run_encoder
    monkeypatch.setattr(features_module, "run_encoder", lambda *a: calls.append(1) or original(*a))
    cache = FeatureOptions(cache_dir=tmp_path / "cache")
    first = train_head("sentiment", encoder, data["classification"], options=FAST, features=cache)
    ran = len(calls)
    assert ran > 0 and len(list((tmp_path / "cache").glob("*.pt"))) == 2  # train and dev
    second = train_head("sentiment", encoder, data["classification"], options=FAST, features=cache)
    assert len(calls) == ran, "the second run re-ran the encoder"
    assert second.report.dev_metrics == first.report.dev_metrics


def test_head_file_for_another_encoder_is_refused(
    encoder: SharedEncoder, data: dict[str, Path], tmp_path: Path
) -> None:
    trained = train_head("sentiment", encoder, data["classification"], options=FAST)
    path = tmp_path / "sentiment.safetensors"
    trained.save(path)
    other_checkpoint = make_checkpoint(tmp_path / "other", seed=9, pretraining_heads=False)
    other = SharedEncoder.load(str(other_checkpoint), device="cpu")
    with pytest.raises(ValueError) as refused:
        load_served_head("sentiment", other, path, ServerConfig(model=str(other_checkpoint)))
    message = str(refused.value)
    assert encoder.fingerprint in message and other.fingerprint in message and "trained on encoder" in message


def test_private_layers_start_as_the_encoders_top_layers(bare_checkpoint: Path, encoder: SharedEncoder) -> None:
    module = EncoderHead(
        HeadArchitecture(pooling="tokens", private_layers=2),
        encoder.config,
        2,
        private_layer_init=list(encoder.bert.encoder.layer),
    )
    outputs = _reference_outputs(bare_checkpoint, encoder, [("the cat sat on the old road .",)])[0]
    hidden, mask = module.select_features(outputs)
    assert hidden is outputs.hidden_states[0]  # 2 layers, both private: they read the embeddings
    with torch.no_grad():
        for layer in module.private_layers or []:
            hidden = layer(hidden, attention_mask=additive_attention_mask(mask, hidden.dtype))
    assert torch.allclose(hidden, outputs.sequence_output, atol=1e-5)
    assert all(p.requires_grad for p in module.private_layers.parameters())  # type: ignore[union-attr]
    assert not any(p.requires_grad for p in encoder.bert.parameters())


@pytest.mark.parametrize(
    ("architecture", "message"),
    [
        (HeadArchitecture(pooling="tokens", layer_mix=True), "layer_mix"),
        (HeadArchitecture(pooling="first", private_layers=3), "private_layers"),
        (HeadArchitecture(pooling="max"), "pooling"),
        (HeadArchitecture(mlp_hidden=-1), "mlp_hidden"),
    ],
)
def test_architecture_settings_are_checked(
    encoder: SharedEncoder, data: dict[str, Path], architecture: HeadArchitecture, message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        train_head("sentiment", encoder, data["classification"], architecture=architecture, options=FAST)


def test_masked_lm_rows_mask_as_bert_does(encoder: SharedEncoder) -> None:
    rng = random.Random(1)
    documents = [[" ".join(rng.choices(THINGS + NOUNS, k=12)) + " ." for _ in range(8)] for _ in range(30)]
    rows = masked_lm_rows(encoder.tokenizer, documents, max_length=48, seed=0, copies=3)
    tokenizer = encoder.tokenizer
    chosen = sum(len(row.positions) for row in rows)
    real = sum(len(row.row) - 2 for row in rows)
    as_mask = sum(row.row.input_ids[p] == tokenizer.mask_token_id for row in rows for p in row.positions)
    kept = sum(row.row.input_ids[p] == t for row in rows for p, t in zip(row.positions, row.targets))
    assert 0.13 < chosen / real < 0.17
    assert 0.75 < as_mask / chosen < 0.85 and 0.06 < kept / chosen < 0.14
    assert all(len(row.row) <= 48 for row in rows)
    assert len({tuple(r.row.input_ids) for r in rows}) > len(rows) // 3 * 2  # copies are masked differently


def test_next_sentence_pairs_are_half_true_continuations() -> None:
    documents = [[f"doc{d} sentence{s} ." for s in range(10)] for d in range(20)]
    pairs = next_sentence_pairs(documents, seed=0, words_per_pair=6)
    share = sum(p.label == IS_NEXT for p in pairs) / len(pairs)
    assert 0.35 < share < 0.65
    for pair in pairs:
        first_doc, second_doc = pair.first.split()[0], pair.second.split()[0]
        assert (first_doc == second_doc) == (pair.label == IS_NEXT)


def test_question_windows_label_the_answer_tokens(encoder: SharedEncoder) -> None:
    filler = " ".join(["the old dog ran on the road ."] * 6)
    context = f"{filler} mary went to rome . {filler}"
    example = QuestionExample("q", "where did mary go ?", context, (("rome", context.index("rome")),))
    windows = question_windows(encoder.tokenizer, example, window=40, stride=10)
    assert len(windows) > 3
    labelled = [w for w in windows if w.start]
    assert labelled, "no window holds the answer"
    for w in labelled:
        assert encoder.tokenizer.decode(w.row.input_ids[w.start : w.end + 1]) == "rome"
        assert w.allowed[w.start] and w.allowed[0]
    assert all(w.start == w.end == 0 for w in windows if w not in labelled)


def test_cli_train_head_then_eval_head(
    bare_checkpoint: Path,
    data: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    out = tmp_path / "sentiment.safetensors"
    common = ["--model", str(bare_checkpoint), "--device", "cpu"]
    # The settings sources of `serve`: a TOML file, then BERTSERVE_* variables, then flags.
    settings = tmp_path / "bertserve.toml"
    settings.write_text(f'[model]\nname = "{bare_checkpoint}"\ndevice = "cpu"\n')
    monkeypatch.setenv("BERTSERVE_MODEL_MAX_SEQUENCE_LENGTH", "3")
    with pytest.raises(SystemExit, match="BERTSERVE_MODEL_MAX_SEQUENCE_LENGTH: model.max_sequence_length"):
        main(["eval-head", "sentiment", "--data", str(data["heldout"]), "--config", str(settings)])
    monkeypatch.delenv("BERTSERVE_MODEL_MAX_SEQUENCE_LENGTH")
    assert (
        main(
            ["train-head", "sentiment", "--data", str(data["classification"]), "--out", str(out), *common]
            + ["--eval-data", str(data["heldout"]), "--epochs", "3", "--mlp-hidden", "8", "--no-cache"]
            + ["--save-dtype", "float16"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    assert "held-out (reviews-heldout.csv)" in printed and f"wrote {out}" in printed
    metadata = read_head_metadata(out)
    assert metadata is not None and metadata.labels == ("negative", "positive")
    assert metadata.extra["head"]["mlp_hidden"] == 8
    assert metadata.extra["training"]["data"] == "reviews.csv" and metadata.extra["training"]["epochs_run"] == 3
    with safe_open(str(out), framework="pt") as stored:
        assert {stored.get_tensor(name).dtype for name in stored.keys()} == {torch.float16}
    evaluate = ["eval-head", "sentiment", "--data", str(data["heldout"]), "--json", "--config", str(settings)]
    assert main([*evaluate, "--head-file", f"sentiment={out}"]) == 0  # serve's --head-file HEAD=PATH
    measured = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert measured["accuracy"] == pytest.approx(metadata.extra["metrics"]["accuracy"])
    monkeypatch.setenv("BERTSERVE_MODEL_HEAD_FILES", f"sentiment={out}")
    assert main(evaluate) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == measured
    monkeypatch.delenv("BERTSERVE_MODEL_HEAD_FILES")
    assert main([*evaluate, "--head-file", str(out)]) == 0  # a bare path: the evaluated head's file
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1]) == measured
    with pytest.raises(SystemExit, match="pooling"):
        main(
            [
                "train-head",
                "question-answering",
                "--data",
                str(data["squad"]),
                "--out",
                str(out),
                "--pooling",
                "mean",
                *common,
            ]
        )


def test_documents_reader_splits_on_blank_lines(tmp_path: Path) -> None:
    path = tmp_path / "corpus.txt"
    path.write_text("one .\ntwo .\n\n\nthree .\n  \nfour .\nfive .")
    assert read_documents(path) == [["one .", "two ."], ["three ."], ["four .", "five ."]]


def test_evaluation_samples_are_spread_over_the_file() -> None:
    from bertserve.training.evaluate import spread

    labels = ["positive"] * 50 + ["negative"] * 50  # sorted, like the movie-review file
    sample = spread(labels, 10)
    assert len(sample) == 10 and sample.count("positive") == sample.count("negative") == 5
    assert spread(labels, None) == labels and spread(labels, 500) == labels
