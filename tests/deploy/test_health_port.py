"""The plaintext health-only port (for kubelet probes on a TLS server) and connection ageing."""

from __future__ import annotations

import dataclasses
import logging
import time

import grpc
import pytest
from bertserve.app import server_options
from bertserve.background import BackgroundServer
from bertserve.config import SecurityConfig, ServerConfig
from bertserve.wire.logs import REQUEST_LOGGER
from bertserve_client.v1 import sentiment_pb2 as st, sentiment_pb2_grpc as st_grpc
from certs import make_certs
from grpc_health.v1 import health_pb2, health_pb2_grpc


def test_plaintext_health_port_beside_a_mutual_tls_server(tiny_config: ServerConfig, tmp_path) -> None:  # type: ignore[no-untyped-def]
    certs = make_certs(tmp_path / "certs")
    security = SecurityConfig(tls_cert=certs.server.cert, tls_key=certs.server.key, tls_client_ca=certs.ca.cert)
    config = dataclasses.replace(tiny_config, security=security, health_port=0)
    with BackgroundServer(config) as running:
        health_port = running._server.health_port
        assert health_port and health_port != running.port
        with grpc.insecure_channel(f"127.0.0.1:{health_port}") as channel:
            health = health_pb2_grpc.HealthStub(channel)
            for service in ("", "liveness", "bertserve.v1.SentimentService"):
                status = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status
                assert status == health_pb2.HealthCheckResponse.SERVING, service
            # Only health lives there: no model RPC answers without the TLS port's client certificate.
            with pytest.raises(grpc.RpcError) as raised:
                st_grpc.SentimentServiceStub(channel).ClassifySentiment(
                    st.ClassifySentimentRequest(texts=["good"]), timeout=10
                )
            assert raised.value.code() == grpc.StatusCode.UNIMPLEMENTED
            # It reports the same status as the main port: NOT_SERVING once draining.
            running.call(running._server.drain(0.1))
            status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=10).status
            assert status == health_pb2.HealthCheckResponse.NOT_SERVING
            liveness = health.Check(health_pb2.HealthCheckRequest(service="liveness"), timeout=10).status
            assert liveness == health_pb2.HealthCheckResponse.SERVING


class _Peers(logging.Handler):
    """Collects the peer address of every request log line."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.peers: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.peers.append(record.__dict__["peer"])


def test_connections_are_closed_at_their_maximum_age(tiny_config: ServerConfig) -> None:
    """The server ends aged connections; the client re-connects (a new client port) and calls keep working."""
    config = dataclasses.replace(tiny_config, max_connection_age_seconds=1.0)
    assert ("grpc.max_connection_age_ms", 1000) in server_options(config)
    logger = logging.getLogger(REQUEST_LOGGER)
    handler, level = _Peers(), logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        with BackgroundServer(config) as running, grpc.insecure_channel(running.address) as channel:
            stub = st_grpc.SentimentServiceStub(channel)
            for _ in range(8):
                stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["good"]), timeout=10)
                time.sleep(0.4)
            time.sleep(0.2)
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
    assert len(handler.peers) == 8 and len(set(handler.peers)) >= 2
