"""TLS, mutual TLS and bearer tokens, through real servers and channels."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import grpc
import pytest
from bertserve.app import BertServeServer
from bertserve.background import BackgroundServer
from bertserve.config import SecurityConfig, ServerConfig
from bertserve.wire import security as sec
from bertserve.wire.security import (
    INVALID_TOKEN_MESSAGE,
    MISSING_TOKEN_MESSAGE,
    AuthInterceptor,
    Principal,
    TokenStore,
    check_security,
    server_credentials,
)
from bertserve_client import BertServeClient
from bertserve_client.errors import BertServeError as ClientError
from bertserve_client.v1 import (
    model_pb2 as md,
    model_pb2_grpc as md_grpc,
    sentiment_pb2 as st,
    sentiment_pb2_grpc as st_grpc,
)
from certs import Certs, make_certs
from cryptography.hazmat.primitives import serialization
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from rpc import decode

FULL = "tok-full-6f1d2c9a"  # named "ops", may call everything
MODEL_ONLY = "tok-model-0b7e44d1"  # named "reader", ModelService only
ENV = "tok-env-91c3aa07"  # from SecurityConfig.tokens: "env-1"
TOKENS_FILE = f"""\
# bearer tokens for the tests

{FULL}   ops
{MODEL_ONLY}  reader /bertserve.v1.ModelService/*, /grpc.reflection.v1alpha.ServerReflection/*
"""
SENTIMENT = "/bertserve.v1.SentimentService/ClassifySentiment"
TIMEOUT = 10.0


def bearer(token: str) -> list[tuple[str, str]]:
    return [("authorization", f"Bearer {token}")]


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


@pytest.fixture(scope="module")
def tokens_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tokens") / "tokens"
    path.write_text(TOKENS_FILE)
    path.chmod(0o600)
    return path


def serve(config: ServerConfig, **security: object) -> Iterator[BackgroundServer]:
    with BackgroundServer(dataclasses.replace(config, security=SecurityConfig(**security))) as running:  # type: ignore[arg-type]
        yield running


@pytest.fixture(scope="module")
def token_server(tiny_config: ServerConfig, tokens_file: Path) -> Iterator[BackgroundServer]:
    """Plaintext, tokens from a file and from the config; reflection needs a token."""
    yield from serve(tiny_config, tokens_file=tokens_file, tokens=(ENV,))


@pytest.fixture(scope="module")
def tls_server(tiny_config: ServerConfig, certs: Certs) -> Iterator[BackgroundServer]:
    """TLS with one token; reflection public."""
    yield from serve(
        tiny_config, tls_cert=certs.server.cert, tls_key=certs.server.key, tokens=(ENV,), public_reflection=True
    )


@pytest.fixture(scope="module")
def mtls_server(tiny_config: ServerConfig, certs: Certs) -> Iterator[BackgroundServer]:
    """Mutual TLS, no tokens."""
    yield from serve(tiny_config, tls_cert=certs.server.cert, tls_key=certs.server.key, tls_client_ca=certs.ca.cert)


def sentiment(channel: grpc.Channel, **kwargs: object) -> st.ClassifySentimentResponse:
    stub = st_grpc.SentimentServiceStub(channel)
    return stub.ClassifySentiment(st.ClassifySentimentRequest(texts=["good"]), timeout=TIMEOUT, **kwargs)


def failure(call, *args, **kwargs):  # type: ignore[no-untyped-def]
    with pytest.raises(grpc.RpcError) as raised:
        call(*args, **kwargs)
    return decode(raised.value)


# --- TLS and mutual TLS ------------------------------------------------------------------------------------------


def test_tls_client_trusting_the_ca_gets_answers_with_standard_token_credentials(
    tls_server: BackgroundServer, certs: Certs
) -> None:
    # grpc's own access-token call credentials send exactly "authorization: Bearer TOKEN".
    credentials = grpc.composite_channel_credentials(
        grpc.ssl_channel_credentials(root_certificates=certs.ca.cert_pem), grpc.access_token_call_credentials(ENV)
    )
    with BertServeClient(tls_server.address, credentials=credentials, timeout=TIMEOUT) as client:
        assert client.sentiment("good").label
        assert {head.name for head in client.list_heads()} >= {"sentiment"}


def test_tls_server_still_requires_the_token(tls_server: BackgroundServer, certs: Certs) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.cert_pem)
    with BertServeClient(tls_server.address, credentials=credentials, timeout=TIMEOUT) as client:
        with pytest.raises(ClientError) as raised:
            client.sentiment("good")
    assert raised.value.code == grpc.StatusCode.UNAUTHENTICATED
    assert raised.value.message == MISSING_TOKEN_MESSAGE


def test_tls_public_reflection_and_health_need_no_token(tls_server: BackgroundServer, certs: Certs) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.cert_pem)
    with grpc.secure_channel(tls_server.address, credentials) as channel:
        assert "bertserve.v1.SentimentService" in ProtoReflectionDescriptorDatabase(channel).get_services()
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=TIMEOUT)
        assert health.status == health_pb2.HealthCheckResponse.SERVING


def test_plaintext_client_cannot_talk_to_a_tls_server(tls_server: BackgroundServer) -> None:
    with grpc.insecure_channel(tls_server.address) as channel:
        error = failure(sentiment, channel, metadata=bearer(ENV))
    assert error.code == grpc.StatusCode.UNAVAILABLE


def test_client_not_trusting_the_servers_ca_fails(tls_server: BackgroundServer, certs: Certs) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.other_ca.cert_pem)
    with grpc.secure_channel(tls_server.address, credentials) as channel:
        error = failure(sentiment, channel, metadata=bearer(ENV))
    assert error.code == grpc.StatusCode.UNAVAILABLE


def test_mtls_client_certificate_signed_by_the_ca_is_accepted(mtls_server: BackgroundServer, certs: Certs) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.cert_pem,
        private_key=certs.client.key_pem,
        certificate_chain=certs.client.cert_pem,
    )
    with BertServeClient(mtls_server.address, credentials=credentials, timeout=TIMEOUT) as client:
        assert client.sentiment("good").label


def test_mtls_rejects_a_client_without_a_certificate(mtls_server: BackgroundServer, certs: Certs) -> None:
    credentials = grpc.ssl_channel_credentials(root_certificates=certs.ca.cert_pem)
    with grpc.secure_channel(mtls_server.address, credentials) as channel:
        error = failure(sentiment, channel)
    assert error.code == grpc.StatusCode.UNAVAILABLE


def test_mtls_rejects_a_client_certificate_from_another_ca(mtls_server: BackgroundServer, certs: Certs) -> None:
    credentials = grpc.ssl_channel_credentials(
        root_certificates=certs.ca.cert_pem,
        private_key=certs.other_client.key_pem,
        certificate_chain=certs.other_client.cert_pem,
    )
    with grpc.secure_channel(mtls_server.address, credentials) as channel:
        error = failure(sentiment, channel)
    assert error.code == grpc.StatusCode.UNAVAILABLE


# --- bearer tokens -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "metadata",
    [[], [("authorization", "Basic b3BzOnB3")], [("authorization", "Bearer ")], [("authorization", FULL)]],
    ids=["none", "basic", "empty-bearer", "no-scheme"],
)
def test_call_without_a_bearer_token_is_unauthenticated(
    token_server: BackgroundServer, metadata: list[tuple[str, str]]
) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        error = failure(sentiment, channel, metadata=metadata)
    assert (error.code, error.message) == (grpc.StatusCode.UNAUTHENTICATED, MISSING_TOKEN_MESSAGE)
    assert (error.domain, error.reason) == ("bertserve", "BEARER_TOKEN_MISSING")


@pytest.mark.parametrize("token", ["tok-wrong", FULL[:-1], FULL + "0", FULL.upper()])
def test_unknown_token_is_unauthenticated(token_server: BackgroundServer, token: str) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        error = failure(sentiment, channel, metadata=bearer(token))
    assert (error.code, error.message, error.reason) == (
        grpc.StatusCode.UNAUTHENTICATED,
        INVALID_TOKEN_MESSAGE,
        "BEARER_TOKEN_INVALID",
    )


def test_two_authorization_entries_are_refused(token_server: BackgroundServer) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        error = failure(sentiment, channel, metadata=[*bearer(FULL), *bearer("tok-wrong")])
    assert error.code == grpc.StatusCode.UNAUTHENTICATED
    assert "one 'authorization'" in error.message


@pytest.mark.parametrize("value", [f"Bearer {FULL}", f"bearer {FULL}", f"Bearer {ENV}"])
def test_valid_token_gets_an_answer(token_server: BackgroundServer, value: str) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        assert sentiment(channel, metadata=[("authorization", value)]).results[0].label


def test_restricted_token_may_call_only_its_methods(token_server: BackgroundServer) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        heads = md_grpc.ModelServiceStub(channel).ListHeads(
            md.ListHeadsRequest(), metadata=bearer(MODEL_ONLY), timeout=TIMEOUT
        )
        assert heads.heads
        error = failure(sentiment, channel, metadata=bearer(MODEL_ONLY))
    assert error.code == grpc.StatusCode.PERMISSION_DENIED
    assert "'reader'" in error.message and SENTIMENT in error.message
    assert (error.reason, error.metadata) == ("METHOD_NOT_ALLOWED", {"principal": "reader", "method": SENTIMENT})
    assert MODEL_ONLY not in error.message


def test_unknown_method_is_not_revealed_without_a_token(token_server: BackgroundServer) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        missing = channel.unary_unary("/bertserve.v1.NoSuchService/Nothing")
        assert failure(missing, b"", timeout=TIMEOUT).code == grpc.StatusCode.UNAUTHENTICATED
        assert failure(missing, b"", timeout=TIMEOUT, metadata=bearer(FULL)).code == grpc.StatusCode.UNIMPLEMENTED


def test_health_check_and_watch_need_no_token(token_server: BackgroundServer) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        check = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert check.status == health_pb2.HealthCheckResponse.SERVING
        watch = health.Watch(health_pb2.HealthCheckRequest(service=""), timeout=TIMEOUT)
        assert next(watch).status == health_pb2.HealthCheckResponse.SERVING
        watch.cancel()


def _list_services(channel: grpc.Channel, metadata: list[tuple[str, str]]) -> list[str]:
    stub = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(list_services="")
    responses = stub.ServerReflectionInfo(iter([request]), metadata=metadata, timeout=TIMEOUT)
    return [service.name for response in responses for service in response.list_services_response.service]


def test_reflection_needs_a_token_unless_public(token_server: BackgroundServer) -> None:
    with grpc.insecure_channel(token_server.address) as channel:
        error = failure(_list_services, channel, [])
        assert (error.code, error.message) == (grpc.StatusCode.UNAUTHENTICATED, MISSING_TOKEN_MESSAGE)
        with pytest.raises(grpc.RpcError):
            ProtoReflectionDescriptorDatabase(channel).get_services()
        assert "bertserve.v1.SentimentService" in _list_services(channel, bearer(FULL))
        # The restricted token's patterns include v1alpha reflection.
        assert "bertserve.v1.ModelService" in _list_services(channel, bearer(MODEL_ONLY))


def test_tokens_never_reach_the_log(token_server: BackgroundServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    with grpc.insecure_channel(token_server.address) as channel:
        failure(sentiment, channel, metadata=bearer("tok-wrong-secret"))
        failure(sentiment, channel, metadata=bearer(MODEL_ONLY))
        sentiment(channel, metadata=bearer(FULL))
    assert "refused /bertserve.v1.SentimentService/ClassifySentiment" in caplog.text  # the refusals were logged
    for token in ("tok-wrong-secret", MODEL_ONLY, FULL):
        assert token not in caplog.text


# --- the interceptor on every handler kind ----------------------------------------------------------------------


def test_interceptor_covers_all_four_handler_kinds_and_sets_the_principal() -> None:
    """Unary and streaming handlers are refused without a token and see `current_principal` with one."""

    async def unary_unary(request: bytes, context: grpc.aio.ServicerContext) -> bytes:
        return (sec.current_principal.get() or "-").encode()

    async def unary_stream(request: bytes, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        yield (sec.current_principal.get() or "-").encode()

    async def stream_unary(requests, context: grpc.aio.ServicerContext) -> bytes:  # type: ignore[no-untyped-def]
        async for _ in requests:
            pass
        return (sec.current_principal.get() or "-").encode()

    async def stream_stream(requests, context: grpc.aio.ServicerContext):  # type: ignore[no-untyped-def]
        async for _ in requests:
            yield (sec.current_principal.get() or "-").encode()

    handlers = {
        "UU": grpc.unary_unary_rpc_method_handler(unary_unary),
        "US": grpc.unary_stream_rpc_method_handler(unary_stream),
        "SU": grpc.stream_unary_rpc_method_handler(stream_unary),
        "SS": grpc.stream_stream_rpc_method_handler(stream_stream),
    }
    store = TokenStore([("tok-a", Principal("alice")), ("tok-b", Principal("bob", ("/t.S/UU",)))])

    async def scenario() -> None:
        server = grpc.aio.server(interceptors=[AuthInterceptor(store)])
        server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler("t.S", handlers)])
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                calls = {
                    "UU": lambda md: channel.unary_unary("/t.S/UU")(b"x", metadata=md),
                    "US": lambda md: _collect(channel.unary_stream("/t.S/US")(b"x", metadata=md)),
                    "SU": lambda md: channel.stream_unary("/t.S/SU")(_requests(), metadata=md),
                    "SS": lambda md: _collect(channel.stream_stream("/t.S/SS")(_requests(), metadata=md)),
                }
                for kind, call in calls.items():
                    assert await call(bearer("tok-a")) in (b"alice", [b"alice"]), kind
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await call(())
                    assert raised.value.code() == grpc.StatusCode.UNAUTHENTICATED, kind
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await call(bearer("tok-c"))
                    assert raised.value.details() == INVALID_TOKEN_MESSAGE, kind
                assert await calls["UU"](bearer("tok-b")) == b"bob"
                for kind in ("US", "SU", "SS"):
                    with pytest.raises(grpc.aio.AioRpcError) as raised:
                        await calls[kind](bearer("tok-b"))
                    assert raised.value.code() == grpc.StatusCode.PERMISSION_DENIED, kind
        finally:
            await server.stop(None)

    asyncio.run(scenario())


async def _requests():  # type: ignore[no-untyped-def]
    yield b"one"


async def _collect(call) -> list[bytes]:  # type: ignore[no-untyped-def]
    return [item async for item in call]


# --- the token store ---------------------------------------------------------------------------------------------


def test_authenticate_compares_against_every_token() -> None:
    store = TokenStore([(f"tok-{n}", Principal(f"p{n}")) for n in range(5)])
    with mock.patch("hmac.compare_digest", wraps=sec.hmac.compare_digest) as compare:
        assert store.authenticate("tok-0") == Principal("p0")  # the first one matches: no early exit
        assert compare.call_count == 5
        compare.reset_mock()
        assert store.authenticate("nope") is None
        assert compare.call_count == 5


def test_check_authorization_header_for_the_metrics_endpoint(tokens_file: Path) -> None:
    store = TokenStore.from_config(SecurityConfig(tokens_file=tokens_file, tokens=(ENV,)))
    assert store is not None
    assert [p.name for p in store.principals] == ["ops", "reader", "env-1"]
    assert store.check_authorization_header(f"Bearer {FULL}")
    assert store.check_authorization_header(f"  bearer   {ENV} ")
    for value in (None, "", "Bearer", f"Basic {FULL}", FULL, "Bearer tok-wrong", f"Bearer {FULL}x"):
        assert not store.check_authorization_header(value), value


def test_tokens_file_format(tmp_path: Path) -> None:
    path = tmp_path / "tokens"
    path.write_text("# a comment\n\n  tok-1\ntok-2 two\ntok-3 three /a/*,/b/c , *Get*\n")
    store = TokenStore.from_config(SecurityConfig(tokens_file=path))
    assert store is not None
    assert store.principals == (
        Principal("line-3"),
        Principal("two"),
        Principal("three", ("/a/*", "/b/c", "*Get*")),
    )
    three = store.principals[2]
    assert three.may_call("/a/X") and three.may_call("/b/c") and three.may_call("/z/GetThing")
    assert not three.may_call("/b/cd") and not three.may_call("/A/X")
    assert TokenStore.from_config(SecurityConfig()) is None


# --- configuration errors ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("# only a comment\n\n", "holds no tokens"),
        ("tok-1 a\ntok-1 b\n", "line 2 repeats the token of security.tokens_file"),
        ("tok-1 a\ntok-2 a\n", "line 2 repeats the name 'a'"),
        ("tok-1 a /x/*,,/y/*\n", "line 1: empty method pattern"),
        ("tok-1 a bertserve.v1.ModelService/*\n", "must start with '/'"),
        ("tök-1 a\n", "printable ASCII"),
    ],
    ids=["empty", "duplicate-token", "duplicate-name", "empty-pattern", "relative-pattern", "non-ascii"],
)
def test_bad_tokens_file_is_rejected_without_echoing_tokens(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "tokens"
    path.write_text(content)
    with pytest.raises(ValueError, match="security.tokens_file") as raised:
        check_security(SecurityConfig(tokens_file=path))
    assert message in str(raised.value)
    assert "tok-" not in str(raised.value) and "tök" not in str(raised.value)


@pytest.mark.parametrize(
    ("tokens", "message"),
    [(("tok-1", ""), "security.tokens: entry 2: the token is empty"), (("tok-1", "tok-1"), "entry 2 repeats")],
)
def test_bad_config_tokens_are_rejected(tokens: tuple[str, ...], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_security(SecurityConfig(tokens=tokens))


def test_token_in_both_file_and_config_is_a_duplicate(tokens_file: Path) -> None:
    with pytest.raises(ValueError, match=r"security.tokens: entry 1 repeats the token of security.tokens_file"):
        check_security(SecurityConfig(tokens_file=tokens_file, tokens=(FULL,)))


def test_missing_tokens_file(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match=f"security.tokens_file: file {tmp_path / 'nope'} not found"):
        check_security(SecurityConfig(tokens_file=tmp_path / "nope"))


def test_tls_configuration_errors(certs: Certs, tmp_path: Path) -> None:
    cert, key, ca = certs.server.cert, certs.server.key, certs.ca.cert
    encrypted = tmp_path / "encrypted-key.pem"
    private_key = serialization.load_pem_private_key(certs.server.key_pem, password=None)
    encryption = serialization.BestAvailableEncryption(b"secret")
    encrypted.write_bytes(
        private_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    )
    cases = [
        (SecurityConfig(tls_cert=cert), "security.tls_cert is set but security.tls_key is not"),
        (SecurityConfig(tls_key=key), "security.tls_key is set but security.tls_cert is not"),
        (SecurityConfig(tls_client_ca=ca), "security.tls_client_ca (mutual TLS) needs server TLS"),
        (SecurityConfig(tls_cert=cert, tls_key=tmp_path / "x.pem"), f"security.tls_key: file {tmp_path / 'x.pem'}"),
        (SecurityConfig(tls_cert=tmp_path, tls_key=key), "security.tls_cert: "),
        (SecurityConfig(tls_cert=key, tls_key=key), "security.tls_cert: "),
        (SecurityConfig(tls_cert=cert, tls_key=cert), "is not a PEM private key"),
        (SecurityConfig(tls_cert=cert, tls_key=key, tls_client_ca=key), "security.tls_client_ca: "),
        (SecurityConfig(tls_cert=cert, tls_key=certs.client.key), "(is the key the certificate's own?)"),
        (SecurityConfig(tls_cert=cert, tls_key=encrypted), f"security.tls_key: {encrypted} is encrypted"),
    ]
    for config, message in cases:
        with pytest.raises(ValueError) as raised:
            server_credentials(config)
        assert message in str(raised.value), config
    assert server_credentials(SecurityConfig()) is None
    assert isinstance(server_credentials(SecurityConfig(tls_cert=cert, tls_key=key)), grpc.ServerCredentials)


def test_server_refuses_to_start_with_bad_security(tiny_config: ServerConfig, tmp_path: Path) -> None:
    config = dataclasses.replace(tiny_config, security=SecurityConfig(tls_cert=tmp_path / "c.pem", tls_key=None))

    async def construct() -> None:
        BertServeServer(config)

    with pytest.raises(ValueError, match="security.tls_cert is set but security.tls_key is not"):
        asyncio.run(construct())
