"""The HTTP/JSON gateway's security and limits: HTTPS with the gRPC certificate, bearer tokens, the body limit."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import ssl
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest
from bertserve.app import BertServeServer
from bertserve.background import BackgroundServer
from bertserve.config import HttpConfig, SecurityConfig, ServerConfig
from bertserve.settings import add_setting_flags, config_from_sources
from certs import Certs, make_certs

FULL = "tok-http-full-5d2a"  # "ops": every method
MODEL_ONLY = "tok-http-model-8c1f"  # "reader": ModelService only
SENTIMENT = "/bertserve.v1.SentimentService/ClassifySentiment"
SERVER_INFO = "/bertserve.v1.ModelService/GetServerInfo"
LIMIT = 64 * 1024


def call(
    port: int, path: str, body: Any = None, *, token: str | None = None, context: ssl.SSLContext | None = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json"} if body is not None else {}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    data = (body if isinstance(body, bytes) else json.dumps(body).encode()) if body is not None else None
    request = urllib.request.Request(f"https://localhost:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=30, context=context) as response:
            return response.status, {k.lower(): v for k, v in response.headers.items()}, json.load(response)
    except urllib.error.HTTPError as error:
        return error.code, {k.lower(): v for k, v in error.headers.items()}, json.load(error)


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("http-certs"))


@pytest.fixture(scope="module")
def secure(tiny_config: ServerConfig, certs: Certs, tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """TLS and tokens on; a small message limit. Yields the HTTPS port."""
    tokens = tmp_path_factory.mktemp("http-tokens") / "tokens"
    tokens.write_text(f"{FULL} ops\n{MODEL_ONLY} reader /bertserve.v1.ModelService/*\n")
    tokens.chmod(0o600)
    security = SecurityConfig(tls_cert=certs.server.cert, tls_key=certs.server.key, tokens_file=tokens)
    config = dataclasses.replace(tiny_config, security=security, http=HttpConfig(port=0), max_message_bytes=LIMIT)
    with BackgroundServer(config) as running:
        assert running._server is not None and running._server.http_port is not None
        yield running._server.http_port


@pytest.fixture(scope="module")
def tls(certs: Certs) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=str(certs.ca.cert))


def test_https_with_the_grpc_certificate(secure: int, tls: ssl.SSLContext) -> None:
    status, _, body = call(secure, SENTIMENT, {"texts": ["a great film"]}, token=FULL, context=tls)
    assert status == 200 and body["results"][0]["label"]
    with pytest.raises(urllib.error.URLError):  # a client that does not trust the CA
        call(secure, SENTIMENT, {"texts": ["a"]}, token=FULL, context=ssl.create_default_context())


def test_no_token_is_401(secure: int, tls: ssl.SSLContext) -> None:
    status, headers, body = call(secure, SENTIMENT, {"texts": ["a"]}, context=tls)
    assert status == 401 and body["code"] == 16 and headers["www-authenticate"] == "Bearer"
    assert body["details"][0]["reason"] == "BEARER_TOKEN_MISSING" and headers["x-request-id"]
    status, _, body = call(secure, SENTIMENT, {"texts": ["a"]}, token="not-a-token", context=tls)
    assert status == 401 and body["details"][0]["reason"] == "BEARER_TOKEN_INVALID"


def test_a_token_whose_patterns_exclude_the_rpc_is_403(secure: int, tls: ssl.SSLContext) -> None:
    status, _, body = call(secure, SENTIMENT, {"texts": ["a"]}, token=MODEL_ONLY, context=tls)
    assert status == 403 and body["code"] == 7
    assert body["details"][0]["reason"] == "METHOD_NOT_ALLOWED" and "reader" in body["message"]
    status, _, body = call(secure, SERVER_INFO, {}, token=MODEL_ONLY, context=tls)
    assert status == 200 and body["serverVersion"]


def test_openapi_needs_a_token_like_reflection(secure: int, tls: ssl.SSLContext) -> None:
    status, _, body = call(secure, "/openapi.json", context=tls)
    assert status == 401 and body["code"] == 16
    status, _, document = call(secure, "/openapi.json", token=MODEL_ONLY, context=tls)
    assert status == 200 and document["security"] == [{"bearer": []}] and SENTIMENT in document["paths"]


def test_a_body_over_the_message_limit_is_413(secure: int, tls: ssl.SSLContext) -> None:
    texts = json.dumps({"texts": ["word " * 100] * (LIMIT // 400)}).encode()
    assert len(texts) > LIMIT
    status, headers, body = call(secure, SENTIMENT, texts, token=FULL, context=tls)
    assert status == 413 and body["details"][0]["reason"] == "REQUEST_TOO_LARGE" and headers["x-request-id"]


def test_http_is_off_by_default_and_set_by_flag_or_environment(tiny_config: ServerConfig) -> None:
    assert ServerConfig().http.port is None and ServerConfig().http.host == ServerConfig().host

    async def unstarted_http_port() -> int | None:  # a server is made on a running event loop
        return BertServeServer(tiny_config).http_port

    assert asyncio.run(unstarted_http_port()) is None
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    config = config_from_sources(parser.parse_args(["--http-port", "8080", "--http-host", "0.0.0.0"]), {})
    assert (config.http.port, config.http.host, config.port) == (8080, "0.0.0.0", 50051)
    assert config_from_sources(parser.parse_args([]), {"BERTSERVE_HTTP_PORT": "0"}).http.port == 0


def test_mutual_tls_requires_a_client_certificate_from_the_ca(tiny_config: ServerConfig, certs: Certs) -> None:
    security = SecurityConfig(tls_cert=certs.server.cert, tls_key=certs.server.key, tls_client_ca=certs.ca.cert)
    config = dataclasses.replace(tiny_config, security=security, http=HttpConfig(port=0))
    with BackgroundServer(config) as running:
        assert running._server is not None and running._server.http_port is not None
        port = running._server.http_port
        with_cert = ssl.create_default_context(cafile=str(certs.ca.cert))
        with_cert.load_cert_chain(certs.client.cert, certs.client.key)
        assert call(port, SENTIMENT, {"texts": ["a"]}, context=with_cert)[0] == 200
        without = ssl.create_default_context(cafile=str(certs.ca.cert))
        with pytest.raises((urllib.error.URLError, ssl.SSLError, ConnectionError)):
            call(port, SENTIMENT, {"texts": ["a"]}, context=without)
