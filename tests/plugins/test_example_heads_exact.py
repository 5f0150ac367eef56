"""The example plugin package (plugins/examples) equals the transformers reference.

`sentence-embedding` is checked against the ``feature-extraction`` pipeline
on `BertModel`, mean-pooled over tokens; `token-classification` against the
``token-classification`` pipeline on `BertForTokenClassification` carrying
the head file's classifier, for every aggregation strategy. Both run on the
tiny random checkpoint, the heads loaded as plugins passed in directly (the
package is put on sys.path, not installed).
"""

from __future__ import annotations

import importlib
import math
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import torch
import transformers
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.plugin import EncoderOutputs, HeadLoadContext, HeadUnavailable, InputError
from bertserve.plugin.errors import InvalidArgument
from bertserve.plugin.schema import schema_violations
from bertserve_client.v1 import inference_pb2, inference_pb2_grpc
from google.protobuf import json_format
from safetensors import safe_open
from transformers import AutoTokenizer, BertForTokenClassification, BertModel, pipeline

EXAMPLES_SRC = Path(__file__).resolve().parents[2] / "plugins" / "examples" / "src"
# Import the modules only: leaving the folder on sys.path would let entry-point
# discovery in other tests find any build metadata left beside the sources.
sys.path.insert(0, str(EXAMPLES_SRC))
try:
    embedding_module = importlib.import_module("bertserve_example_heads.embedding")
    token_module = importlib.import_module("bertserve_example_heads.token_classification")
finally:
    sys.path.remove(str(EXAMPLES_SRC))

LABELS = ("O", "B-PER", "I-PER", "B-LOC", "I-LOC")
STRATEGIES = ("none", "simple", "first", "average", "max")
MAX_LENGTH = 64
TOL = 1e-4

# Words missing from the tiny vocabulary split into one wordpiece per letter;
# "€5" and the emoji are [UNK]; "é" loses its accent but keeps its offsets.
TEXTS = [
    "john went to paris",
    "Mary Müller liked the zorblax in Berlin .",
    "the café costs €5 😀 in rome, john-mary!",
    "a",
    "qwerty uiop asdf ghjkl",
    "The Quickest brownish foxes jumped over the lazy dogs near Frankfurt am Main",
]
OVER_LONG = " ".join(["the movie was good but the plot was boring ."] * 8)


@pytest.fixture(scope="module")
def token_head_file(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Random classifier weights, large enough that every label wins somewhere."""
    encoder = SharedEncoder.load(str(tiny_checkpoint), device="cpu")
    generator = torch.Generator().manual_seed(2)
    weight = torch.randn(len(LABELS), encoder.hidden_size, generator=generator)
    bias = 0.5 * torch.randn(len(LABELS), generator=generator)
    path = tmp_path_factory.mktemp("example-heads") / "ner.safetensors"
    return token_module.save_token_classification_head(path, encoder, weight, bias, LABELS)


@pytest.fixture(scope="module")
def running(tiny_checkpoint: Path, token_head_file: Path) -> Iterator[BackgroundServer]:
    config = ServerConfig(
        model=str(tiny_checkpoint),
        head_files={"token-classification": token_head_file},
        device="cpu",
        port=0,
    )
    plugins = [("sentence-embedding", embedding_module), ("token-classification", token_module)]
    with BackgroundServer(config, plugins=plugins) as server:
        yield server


def run(running: BackgroundServer, name: str, items: list[Any]) -> list[Any]:
    head = running.runtime.head(name, task=name)
    coroutine = running.runtime.run(head, items, None, field_of=lambda i: f"inputs[{i}]")
    return running.call(coroutine, timeout=60)


@pytest.fixture(scope="module")
def tokenizer(tiny_checkpoint: Path) -> transformers.PreTrainedTokenizerBase:
    return AutoTokenizer.from_pretrained(tiny_checkpoint)


def _quietly(load: Any) -> Any:
    verbosity = transformers.logging.get_verbosity()
    transformers.logging.set_verbosity_error()  # unused pretraining heads / new classifier are reported
    try:
        return load()
    finally:
        transformers.logging.set_verbosity(verbosity)


@pytest.fixture(scope="module")
def feature_extractor(tiny_checkpoint: Path, tokenizer: Any) -> Any:
    model = _quietly(lambda: BertModel.from_pretrained(tiny_checkpoint, dtype="float32"))
    return pipeline("feature-extraction", model=model.eval(), tokenizer=tokenizer, device="cpu")


@pytest.fixture(scope="module")
def token_classifiers(tiny_checkpoint: Path, tokenizer: Any, token_head_file: Path) -> dict[str, Any]:
    with safe_open(str(token_head_file), framework="pt") as handle:
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    model = _quietly(
        lambda: BertForTokenClassification.from_pretrained(
            tiny_checkpoint,
            num_labels=len(LABELS),
            id2label=dict(enumerate(LABELS)),
            label2id={label: i for i, label in enumerate(LABELS)},
            dtype="float32",
        )
    )
    with torch.no_grad():
        model.classifier.weight.copy_(tensors["classifier.weight"])
        model.classifier.bias.copy_(tensors["classifier.bias"])
    model.eval()
    return {
        strategy: pipeline(
            "token-classification", model=model, tokenizer=tokenizer, aggregation_strategy=strategy, device="cpu"
        )
        for strategy in STRATEGIES
    }


# --- sentence-embedding ---------------------------------------------------------------------------


def reference_embedding(feature_extractor: Any, text: str, normalize: bool, **kwargs: Any) -> np.ndarray:
    tokens = np.asarray(feature_extractor(text, **kwargs)[0], dtype=np.float64)  # [tokens, hidden]
    mean = tokens.mean(axis=0)
    return mean / np.linalg.norm(mean) if normalize else mean


def assert_embedding(got: Any, expected: np.ndarray, what: str) -> None:
    assert got.dimensions == len(expected) == len(got.embedding), what
    difference = np.abs(np.asarray(got.embedding) - expected).max()
    assert difference <= TOL, f"{what}: embedding differs from the reference by {difference}"


@pytest.mark.parametrize("normalize", [True, False])
def test_embedding_batched_equals_reference(running, feature_extractor, normalize: bool) -> None:  # type: ignore[no-untyped-def]
    items = [embedding_module.SentenceEmbeddingInput(text=text, normalize=normalize) for text in TEXTS]
    outputs = run(running, "sentence-embedding", items)
    assert len(outputs) == len(TEXTS)
    for text, output in zip(TEXTS, outputs):
        assert_embedding(output, reference_embedding(feature_extractor, text, normalize), repr(text))
        norm = math.sqrt(sum(x * x for x in output.embedding))
        assert (abs(norm - 1.0) <= TOL) == normalize, f"{text!r}: norm {norm}"


def test_embedding_one_text_per_call_equals_reference(running, feature_extractor) -> None:  # type: ignore[no-untyped-def]
    for text in TEXTS:
        (output,) = run(running, "sentence-embedding", [embedding_module.SentenceEmbeddingInput(text=text)])
        assert_embedding(output, reference_embedding(feature_extractor, text, True), repr(text))


def test_embedding_forward_ignores_padding(running, feature_extractor) -> None:  # type: ignore[no-untyped-def]
    """One padded batch built by hand: padding must not leak into any row's mean."""
    head = running.runtime.head("sentence-embedding", task="sentence-embedding")
    encoder = running.runtime.encoder
    items = [embedding_module.SentenceEmbeddingInput(text=text, normalize=False) for text in TEXTS]
    rows = [head.preprocess(item)[0] for item in items]
    width = max(len(row) for row in rows)
    assert min(len(row) for row in rows) < width, "the batch should need padding"
    pad = encoder.tokenizer.pad_token_id

    def padded(values: list[int], fill: int) -> list[int]:
        return values + [fill] * (width - len(values))

    batch = encoder.forward(
        torch.tensor([padded(row.input_ids, pad) for row in rows]),
        torch.tensor([padded(row.token_type_ids, 0) for row in rows]),
        torch.tensor([padded([1] * len(row), 0) for row in rows]),
    )
    outputs = EncoderOutputs(batch.sequence_output, batch.pooled_output, batch.attention_mask)
    results = head.forward(outputs, rows)
    for item, row, result in zip(items, rows, results):
        assert_embedding(
            head.postprocess(item, [row], [result]), reference_embedding(feature_extractor, item.text, False), item.text
        )


def test_embedding_truncates_only_when_asked(running, feature_extractor) -> None:  # type: ignore[no-untyped-def]
    head = running.runtime.head("sentence-embedding", task="sentence-embedding")
    with pytest.raises(InputError, match=f"at most {MAX_LENGTH}"):
        head.preprocess(embedding_module.SentenceEmbeddingInput(text=OVER_LONG))
    (output,) = run(running, "sentence-embedding", [embedding_module.SentenceEmbeddingInput(OVER_LONG, truncate=True)])
    expected = reference_embedding(
        feature_extractor, OVER_LONG, True, tokenize_kwargs={"truncation": True, "max_length": MAX_LENGTH}
    )
    assert_embedding(output, expected, "truncated text")


# --- token-classification -------------------------------------------------------------------------


def reference_entities(classifier: Any, text: str, ignore_labels: tuple[str, ...]) -> list[tuple[Any, ...]]:
    return [
        (
            entity.get("entity_group", entity.get("entity")),
            entity["word"],
            entity["start"],
            entity["end"],
            entity.get("index"),
            float(entity["score"]),
        )
        for entity in classifier(text, ignore_labels=list(ignore_labels))
    ]


def served_entities(output: Any) -> list[tuple[Any, ...]]:
    return [(e.label, e.word, e.start, e.end, e.token_index, e.score) for e in output.entities]


def assert_entities(got: list[tuple[Any, ...]], expected: list[tuple[Any, ...]], what: str) -> None:
    assert [g[:5] for g in got] == [e[:5] for e in expected], what
    for g, e in zip(got, expected):
        assert abs(g[5] - e[5]) <= TOL, f"{what}: score of {g[:4]} is {g[5]}, reference {e[5]}"


@pytest.mark.parametrize("ignore_labels", [("O",), ()], ids=["ignore-O", "ignore-nothing"])
@pytest.mark.parametrize("strategy", STRATEGIES)
def test_token_classification_equals_pipeline(running, token_classifiers, strategy, ignore_labels) -> None:  # type: ignore[no-untyped-def]
    items = [
        token_module.TokenClassificationInput(text=text, aggregation=strategy, ignore_labels=ignore_labels)
        for text in TEXTS
    ]
    outputs = run(running, "token-classification", items)  # all texts in one call: one padded batch
    for text, output in zip(TEXTS, outputs):
        expected = reference_entities(token_classifiers[strategy], text, ignore_labels)
        assert_entities(served_entities(output), expected, f"{strategy} {ignore_labels} {text!r}")
        for entity in output.entities:
            assert (entity.token_index is None) == (strategy != "none")
            if strategy != "none":
                assert not entity.label.startswith(("B-", "I-"))


def test_token_classification_weights_exercise_every_rule(running, token_classifiers) -> None:  # type: ignore[no-untyped-def]
    """Guards the inputs above: labels vary, groups span tokens, and the strategies disagree."""
    tokens = [e for text in TEXTS for e in reference_entities(token_classifiers["none"], text, ())]
    assert {label for label, *_ in tokens} == set(LABELS), "every label should win on some token"
    words = {s: [reference_entities(token_classifiers[s], text, ()) for text in TEXTS] for s in STRATEGIES}
    simple_groups = [e for entities in words["simple"] for e in entities]
    assert any(" " in word or len(word) > 1 for _, word, *_ in simple_groups)
    assert len(simple_groups) < len(tokens), "simple should merge some adjacent tokens"
    assert words["first"] != words["simple"], "some word should have disagreeing pieces"
    assert len({str(words[s]) for s in ("first", "average", "max")}) > 1, "word strategies should differ somewhere"


def test_token_classification_one_text_per_call_and_custom_ignore(running, token_classifiers) -> None:  # type: ignore[no-untyped-def]
    for text in TEXTS:
        item = token_module.TokenClassificationInput(text=text, aggregation="average", ignore_labels=("O", "PER"))
        (output,) = run(running, "token-classification", [item])
        expected = reference_entities(token_classifiers["average"], text, ("O", "PER"))
        assert_entities(served_entities(output), expected, repr(text))
        assert all(entity.label not in ("O", "PER") for entity in output.entities)


def test_token_classification_truncates_only_when_asked(running, token_classifiers) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(InvalidArgument, match=f"at most {MAX_LENGTH}"):
        run(running, "token-classification", [token_module.TokenClassificationInput(text=OVER_LONG)])
    item = token_module.TokenClassificationInput(text=OVER_LONG, aggregation="simple", truncate=True)
    (output,) = run(running, "token-classification", [item])
    # The pipeline always truncates to the tokenizer's model_max_length (64 here).
    assert_entities(served_entities(output), reference_entities(token_classifiers["simple"], OVER_LONG, ("O",)), "")


def test_token_classification_rejects_bad_input(running) -> None:  # type: ignore[no-untyped-def]
    head = running.runtime.head("token-classification", task="token-classification")
    with pytest.raises(InputError, match="empty"):
        head.preprocess(token_module.TokenClassificationInput(text="  "))
    with pytest.raises(InputError, match="aggregation must be one of"):
        head.preprocess(token_module.TokenClassificationInput(text="hi", aggregation="longest"))  # type: ignore[arg-type]


# --- schemas, loading, the head file --------------------------------------------------------------


def test_input_schemas_validate(running) -> None:  # type: ignore[no-untyped-def]
    tokens = running.runtime.head("token-classification", task="token-classification")
    schema = tokens.input_schema()
    assert schema["properties"]["aggregation"]["enum"] == list(STRATEGIES)
    violations = schema_violations(schema, {"text": "john", "aggregation": "longest"}, prefix="input")
    assert [path for path, _ in violations] == ["input.aggregation"]
    assert schema_violations(schema, {"text": "john", "aggregation": "max", "ignore_labels": []}, prefix="input") == []
    parsed = tokens.parse_input({"text": "john", "aggregation": "max", "ignore_labels": []})
    assert parsed == token_module.TokenClassificationInput(text="john", aggregation="max", ignore_labels=())
    assert token_module.TokenClassificationInput(text="john").ignore_labels == ("O",)
    assert [p for p, _ in schema_violations(schema, {"aggregation": "max"}, prefix="input")] == ["input.text"]

    embedding = running.runtime.head("sentence-embedding", task="sentence-embedding")
    violations = schema_violations(embedding.input_schema(), {"text": "hi", "normalize": "yes"}, prefix="input")
    assert [path for path, _ in violations] == ["input.normalize"]
    assert embedding.parse_input({"text": "hi"}) == embedding_module.SentenceEmbeddingInput(text="hi")


def test_outputs_match_their_schemas(running) -> None:  # type: ignore[no-untyped-def]
    for name, item in [
        ("sentence-embedding", embedding_module.SentenceEmbeddingInput(text=TEXTS[1])),
        ("token-classification", token_module.TokenClassificationInput(text=TEXTS[1], aggregation="none")),
        ("token-classification", token_module.TokenClassificationInput(text=TEXTS[1], aggregation="first")),
    ]:
        head = running.runtime.head(name, task=name)
        (output,) = run(running, name, [item])
        rendered = head.render_output(output)
        assert schema_violations(head.output_schema(), rendered, prefix="output") == [], name
    schema = running.runtime.head("token-classification", task="token-classification").output_schema()
    bad = {"entities": [{"score": 0.5, "word": "x", "start": 0, "end": 1}]}
    assert [p for p, _ in schema_violations(schema, bad, prefix="output")] == ["output.entities[0].label"]


def test_heads_load_as_plugins(running) -> None:  # type: ignore[no-untyped-def]
    records = {record.head.name: record for record in running.runtime.registry.records()}
    assert records["token-classification"].state.value == "loaded"
    assert records["token-classification"].labels == LABELS
    assert records["sentence-embedding"].state.value == "loaded"
    assert embedding_module.BERTSERVE_API_VERSION == token_module.BERTSERVE_API_VERSION == "1.1"


def test_token_head_needs_a_fitting_head_file(running, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    encoder = running.runtime.encoder
    head = token_module.TokenClassificationHead()
    context = HeadLoadContext(encoder=encoder, head_file=None, config=running.runtime.config)
    with pytest.raises(HeadUnavailable, match="no head file"):
        head.load(context)
    weight, bias = torch.zeros(3, encoder.hidden_size), torch.zeros(3)
    with pytest.raises(ValueError, match="expected"):
        token_module.save_token_classification_head(tmp_path / "x.safetensors", encoder, weight, bias, ["O", "B-X"])
    with pytest.raises(ValueError, match="distinct"):
        token_module.save_token_classification_head(tmp_path / "x.safetensors", encoder, weight, bias, ["O", "O", "X"])


# --- over the wire: the generic InferenceService ----------------------------------------------------


def _from_json(entities: list[dict[str, Any]]) -> list[tuple[Any, ...]]:
    """Entities as Predict returns them (Struct numbers are floats, null is None)."""
    return [(e["label"], e["word"], int(e["start"]), int(e["end"]), e["token_index"], e["score"]) for e in entities]


def test_predict_and_analyze_over_grpc(running, token_classifiers, feature_extractor) -> None:  # type: ignore[no-untyped-def]
    with grpc.insecure_channel(running.address) as channel:
        stub = inference_pb2_grpc.InferenceServiceStub(channel)
        for text in TEXTS[:3]:
            request = inference_pb2.PredictRequest(head="token-classification")
            request.input.update({"text": text, "aggregation": "none", "ignore_labels": []})
            output = json_format.MessageToDict(stub.Predict(request).output)
            expected = reference_entities(token_classifiers["none"], text, ())
            assert_entities(_from_json(output["entities"]), expected, f"Predict {text!r}")

            request = inference_pb2.PredictRequest(head="sentence-embedding")
            request.input.update({"text": text})
            output = json_format.MessageToDict(stub.Predict(request).output)
            expected_embedding = reference_embedding(feature_extractor, text, True)
            difference = np.abs(np.asarray(output["embedding"]) - expected_embedding).max()
            assert difference <= TOL and output["dimensions"] == len(expected_embedding), f"Predict {text!r}"

        request = inference_pb2.PredictRequest(head="token-classification")
        request.input.update({"text": "john", "aggregation": "longest"})
        with pytest.raises(grpc.RpcError) as raised:
            stub.Predict(request)
        assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "input.aggregation" in raised.value.details()

        # Both heads read the same tokens, so Analyze runs each text through the encoder once.
        options = json_format.ParseDict({"aggregation": "first"}, inference_pb2.HeadOptions().options)
        request = inference_pb2.AnalyzeRequest(
            inputs=[inference_pb2.AnalyzeInput(text=text) for text in TEXTS],
            heads=[
                inference_pb2.HeadOptions(head="token-classification", options=options),
                inference_pb2.HeadOptions(head="sentence-embedding"),
            ],
        )
        results = stub.Analyze(request).results
    assert len(results) == len(TEXTS)
    for text, result in zip(TEXTS, results):
        entities, embedded = (json_format.MessageToDict(output.output) for output in result.outputs)
        expected = reference_entities(token_classifiers["first"], text, ("O",))
        assert_entities(_from_json(entities["entities"]), expected, f"Analyze {text!r}")
        difference = np.abs(np.asarray(embedded["embedding"]) - reference_embedding(feature_extractor, text, True))
        assert difference.max() <= TOL, f"Analyze {text!r}"
