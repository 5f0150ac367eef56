"""The shared encoder: what it finds in a checkpoint, its identity, and weight sharing."""

from __future__ import annotations

from pathlib import Path

import torch
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.model.registry import HeadState
from tiny_models import make_checkpoint
from transformers import BertModel


def test_pretraining_heads_are_found_in_a_pretraining_checkpoint(tiny_checkpoint: Path) -> None:
    encoder = SharedEncoder.load(str(tiny_checkpoint), device="cpu")
    predictions = encoder.pretraining_head_state("predictions")
    assert predictions is not None and "transform.dense.weight" in predictions
    assert "decoder.weight" not in predictions  # tied to the word embeddings, never copied
    assert encoder.pretraining_head_state("seq_relationship") is not None
    assert encoder.has_pooler


def test_a_bare_encoder_has_no_pretraining_heads(tmp_path: Path) -> None:
    folder = make_checkpoint(tmp_path / "bare", pretraining_heads=False)
    encoder = SharedEncoder.load(str(folder), device="cpu")
    assert encoder.pretraining_head_state("predictions") is None
    assert encoder.pretraining_head_state("seq_relationship") is None
    assert encoder.has_pooler


def test_an_encoder_without_pooler_refuses_pooled_heads(tmp_path: Path, tiny_checkpoint: Path) -> None:
    model = BertModel.from_pretrained(str(tiny_checkpoint), add_pooling_layer=False)
    folder = tmp_path / "no-pooler"
    model.save_pretrained(folder)
    SharedEncoder.load(str(tiny_checkpoint)).tokenizer.save_pretrained(folder)
    encoder = SharedEncoder.load(str(folder), device="cpu")
    assert not encoder.has_pooler
    with BackgroundServer(ServerConfig(model=str(folder), device="cpu", port=0)) as running:
        records = {r.head.name: r for r in running.runtime.registry.records()}
        assert records["next-sentence"].state is HeadState.UNAVAILABLE


def test_fingerprint_identifies_weights_not_dtype(tmp_path: Path, tiny_checkpoint: Path) -> None:
    float32 = SharedEncoder.load(str(tiny_checkpoint), device="cpu")
    bfloat16 = SharedEncoder.load(str(tiny_checkpoint), device="cpu", dtype="bfloat16")
    other = SharedEncoder.load(str(make_checkpoint(tmp_path / "other", seed=3)), device="cpu")
    assert float32.fingerprint == bfloat16.fingerprint != other.fingerprint
    assert bfloat16.bert.embeddings.word_embeddings.weight.dtype == torch.bfloat16


def test_fill_mask_decoder_shares_the_word_embedding_matrix(server: BackgroundServer) -> None:
    head = server.runtime.head("fill-mask", task="fill-mask")
    embeddings = server.runtime.encoder.word_embeddings
    assert head._module.decoder_weight.data_ptr() == embeddings.data_ptr()  # type: ignore[attr-defined]


def test_max_sequence_length_is_the_smaller_of_model_and_option(tiny_checkpoint: Path) -> None:
    assert SharedEncoder.load(str(tiny_checkpoint)).max_sequence_length == 64
    assert SharedEncoder.load(str(tiny_checkpoint), max_sequence_length=32).max_sequence_length == 32
