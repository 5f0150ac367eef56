"""``--dtype int8``: the encoder's linear layers dynamically quantized on the CPU.

An int8 server on the tiny checkpoint serves every head with float32-trained
head files (the fingerprint is that of the float32 weights), its encoder
layers really are quantized (outputs differ from float32) and every head's
answer stays within a measured tolerance of the float32 server's. int8 on
CUDA is refused at load time, and the setting parses.

Tolerances, measured on these tiny random checkpoints (2 layers, 32 wide,
weights ~N(0, 0.2), random heads: far rougher for int8 than a trained
model). With 8-bit inputs (a CPU with AVX-512 VNNI): hidden states within
0.083 absolute of float32 (cosine >= 0.9995); head probabilities within
0.061 (one sentiment answer near its decision boundary; mean 0.005 over 48
answers of the four heads). PyTorch's 7-bit inputs with per-tensor weights,
worse than any CPU gets here: 0.19 (cosine >= 0.998), 0.032, mean 0.006.
Asserted: hidden < 0.25, probabilities < 0.1, mean < 0.015.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
import torch
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder, resolve_dtype
from bertserve.nn import quantize
from bertserve.plugin.head import EncodedRow
from bertserve.plugin.headfile import save_head_file
from bertserve.plugin.modules import EncoderHead, HeadArchitecture
from bertserve.plugin.trained import load_encoder_head
from bertserve.settings import ConfigError, add_setting_flags, config_from_sources
from bertserve_client.v1 import inference_pb2 as inf, inference_pb2_grpc as inf_grpc, model_pb2, model_pb2_grpc
from google.protobuf import json_format, struct_pb2
from tiny_models import WORDS, head_metadata

PROBABILITY_TOLERANCE = 0.1
MEAN_PROBABILITY_TOLERANCE = 0.015
HIDDEN_TOLERANCE = 0.25
HEADS = ("sentiment", "fill-mask", "question-answering", "next-sentence")


def sentences(count: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = [w for w in WORDS if w.isalpha()]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(3, 14))) + " ." for _ in range(count)]


def head_inputs() -> list[tuple[str, dict[str, Any]]]:
    texts = sentences(12)
    calls: list[tuple[str, dict[str, Any]]] = []
    for i, text in enumerate(texts):
        words = text.split()
        masked = " ".join(words[:1] + ["[MASK]"] + words[2:])
        calls.append(("sentiment", {"text": text}))
        calls.append(("fill-mask", {"text": masked, "top_k": 3}))
        calls.append(("next-sentence", {"first": text, "second": texts[(i + 1) % len(texts)]}))
        context = " ".join(texts[i : i + 3])
        calls.append(("question-answering", {"question": "what " + " ".join(words[1:]), "context": context}))
    return calls


def struct(data: dict[str, Any]) -> struct_pb2.Struct:
    message = struct_pb2.Struct()
    message.update(data)
    return message


def predict_all(server: BackgroundServer) -> list[dict[str, Any]]:
    with grpc.insecure_channel(server.address) as channel:
        stub = inf_grpc.InferenceServiceStub(channel)
        return [
            json_format.MessageToDict(stub.Predict(inf.PredictRequest(head=head, input=struct(data))).output)
            for head, data in head_inputs()
        ]


def probabilities(head: str, output: dict[str, Any]) -> dict[str, float]:
    """The comparable probabilities of one head's answer, by a stable key."""
    if head == "sentiment":
        return {score["label"]: score["score"] for score in output["scores"]}
    if head == "fill-mask":
        return {p["token"]: p["score"] for mask in output["masks"] for p in mask["predictions"]}
    if head == "next-sentence":
        return {"is_next": output["is_next_probability"]}
    return {"best": max(answer["score"] for answer in output["answers"])}


@pytest.fixture(scope="module")
def int8_server(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    with BackgroundServer(dataclasses.replace(tiny_config, dtype="int8")) as running:
        yield running


@pytest.fixture(scope="module")
def encoders(tiny_checkpoint: Path) -> tuple[SharedEncoder, SharedEncoder]:
    """(float32, int8) encoders on the tiny checkpoint."""
    return (
        SharedEncoder.load(str(tiny_checkpoint), device="cpu", dtype="float32"),
        SharedEncoder.load(str(tiny_checkpoint), device="cpu", dtype="int8"),
    )


def rows(count: int, vocab_size: int, seed: int = 0) -> list[EncodedRow]:
    generator = torch.Generator().manual_seed(seed)
    lengths = torch.randint(2, 64, (count,), generator=generator).tolist()
    return [EncodedRow(torch.randint(5, vocab_size, (n,), generator=generator).tolist(), [0] * n) for n in lengths]


def test_int8_quantizes_the_encoder_layers_linear_layers_only(encoders: tuple[SharedEncoder, SharedEncoder]) -> None:
    float_encoder, int8_encoder = encoders
    linear = [m for m in int8_encoder.bert.encoder.modules() if isinstance(m, torch.nn.Linear)]
    quantized = [m for m in int8_encoder.bert.encoder.modules() if quantize.is_quantized_linear(m)]
    assert not linear and len(quantized) == 6 * int(int8_encoder.config.num_hidden_layers)
    assert type(int8_encoder.bert.pooler.dense) is torch.nn.Linear  # shared with pooled heads, float32
    assert int8_encoder.word_embeddings.dtype == torch.float32
    assert int8_encoder.dtype == torch.float32 and int8_encoder.dtype_name == "int8"
    assert float_encoder.dtype_name == "float32" and not float_encoder.quantized
    assert int8_encoder.fingerprint == float_encoder.fingerprint


@pytest.mark.parametrize("full_range", [True, False])
def test_linear_layers_get_per_channel_int8_weights(full_range: bool) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(16, 24), torch.nn.GELU(), torch.nn.Linear(24, 8))
    inputs = torch.randn(5, 16)
    want = model(inputs).detach()
    assert quantize.quantize_linear_layers(model, full_range=full_range) == 2
    layers = [model[0], model[2]]
    assert all(quantize.is_quantized_linear(layer) for layer in layers)
    assert all(isinstance(layer, quantize.FullRangeDynamicLinear) == full_range for layer in layers)
    assert all(layer.weight().qscheme() == torch.per_channel_affine for layer in layers)
    got = model(inputs)
    assert got.dtype == torch.float32 and 0 < (got - want).abs().max().item() < 0.05


def test_int8_hidden_states_differ_from_float32_within_tolerance(
    encoders: tuple[SharedEncoder, SharedEncoder],
) -> None:
    float_encoder, int8_encoder = encoders
    batch = rows(8, int(float_encoder.config.vocab_size))
    want, got = float_encoder.forward_packed(batch), int8_encoder.forward_packed(batch)
    assert torch.equal(want.hidden_states[0], got.hidden_states[0])  # embeddings stay float32
    difference = (want.sequence_output - got.sequence_output).abs().max().item()
    assert 1e-3 < difference < HIDDEN_TOLERANCE
    cosine = torch.nn.functional.cosine_similarity(want.sequence_output, got.sequence_output, dim=-1)
    assert cosine.min().item() > 0.99
    assert got.pooled_output is not None and want.pooled_output is not None
    assert (want.pooled_output - got.pooled_output).abs().max().item() < HIDDEN_TOLERANCE


def test_packed_int8_forward_runs_the_quantized_modules_like_transformers(
    encoders: tuple[SharedEncoder, SharedEncoder],
) -> None:
    """One row alone: the same tensors reach the same quantized layers, so both forwards agree closely."""
    _, int8_encoder = encoders
    (row,) = rows(1, int(int8_encoder.config.vocab_size), seed=3)
    packed_output = int8_encoder.forward_packed([row]).sequence_output
    ids = torch.tensor([row.input_ids])
    reference = int8_encoder.forward(ids, torch.zeros_like(ids), torch.ones_like(ids)).sequence_output[0]
    assert torch.allclose(packed_output, reference, atol=1e-4)


def test_private_layer_heads_stay_float32_on_an_int8_encoder(
    encoders: tuple[SharedEncoder, SharedEncoder], tmp_path: Path
) -> None:
    """A head's private layers are built from its head file, never copied from the quantized encoder."""
    float_encoder, int8_encoder = encoders
    architecture = HeadArchitecture(pooling="mean", private_layers=1)
    trained = EncoderHead(
        architecture, float_encoder.config, 2, private_layer_init=list(float_encoder.bert.encoder.layer)
    )
    metadata = head_metadata(float_encoder, "sentiment", "encoder-head", ("no", "yes"), head=architecture.to_dict())
    path = tmp_path / "private.safetensors"
    save_head_file(path, trained.state_dict(), metadata)
    batch = rows(4, int(float_encoder.config.vocab_size), seed=1)
    logits = []
    for encoder in (float_encoder, int8_encoder):
        head, _ = load_encoder_head(path, head_name="sentiment", task="sentiment", encoder=encoder)
        assert head.private_layers is not None
        assert not any(quantize.is_quantized_linear(m) for m in head.private_layers.modules())
        assert {p.dtype for p in head.private_layers.parameters()} == {torch.float32}
        outputs = encoder.forward_rows(batch)
        with torch.inference_mode():
            logits.append(head(head.select_features(outputs)).softmax(dim=-1))
    assert (logits[0] - logits[1]).abs().max().item() < PROBABILITY_TOLERANCE


def test_int8_server_reports_int8_and_loads_every_head(int8_server: BackgroundServer) -> None:
    with grpc.insecure_channel(int8_server.address) as channel:
        stub = model_pb2_grpc.ModelServiceStub(channel)
        assert stub.GetServerInfo(model_pb2.GetServerInfoRequest()).dtype == "int8"
        heads = stub.ListHeads(model_pb2.ListHeadsRequest()).heads
    states = {head.name: head.state for head in heads}
    assert all(states[name] == model_pb2.HEAD_STATE_LOADED for name in HEADS), states


def test_every_head_answers_close_to_float32(server: BackgroundServer, int8_server: BackgroundServer) -> None:
    float_outputs, int8_outputs = predict_all(server), predict_all(int8_server)
    differences = []
    labels_equal = 0
    for (head, _), want, got in zip(head_inputs(), float_outputs, int8_outputs):
        want_p, got_p = probabilities(head, want), probabilities(head, got)
        shared = want_p.keys() & got_p.keys()
        assert shared, (head, want, got)
        differences.append(max(abs(want_p[key] - got_p[key]) for key in shared))
        if head == "sentiment":
            labels_equal += want["label"] == got["label"]
    assert 1e-5 < max(differences) < PROBABILITY_TOLERANCE  # quantized (not identical), yet close
    assert sum(differences) / len(differences) < MEAN_PROBABILITY_TOLERANCE
    assert labels_equal >= 11  # of 12 sentiment answers


def test_int8_is_refused_on_cuda_and_is_float32_activations_on_the_cpu() -> None:
    with pytest.raises(ValueError, match="int8.*CPU only"):
        resolve_dtype("int8", torch.device("cuda:0"))
    assert resolve_dtype("int8", torch.device("cpu")) == torch.float32
    assert resolve_dtype("auto", torch.device("cpu")) == torch.float32  # never the default


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_int8_server_on_cuda_fails_to_load(tiny_checkpoint: Path) -> None:
    with pytest.raises(ValueError, match="int8.*CPU only"):
        SharedEncoder.load(str(tiny_checkpoint), device="cuda", dtype="int8")


def test_dtype_int8_parses_from_flag_and_environment() -> None:
    import argparse

    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    assert config_from_sources(parser.parse_args(["--dtype", "int8"]), {}).dtype == "int8"
    assert config_from_sources(parser.parse_args([]), {"BERTSERVE_MODEL_DTYPE": "int8"}).dtype == "int8"
    assert config_from_sources(parser.parse_args([]), {}).dtype == "auto"
    with pytest.raises(ConfigError, match="int8"):
        config_from_sources(parser.parse_args([]), {"BERTSERVE_MODEL_DTYPE": "int4"})
