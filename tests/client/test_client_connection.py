"""Production connection options of the Python clients, against fake in-process servers.

TLS and mutual TLS, bearer tokens, gRPC-core retries (with the server's
pushback delay), round-robin over several targets, keepalive and raw channel
options. The fake servers implement ModelService.GetServerInfo only, from the
generated stubs; no torch involved.
"""

from __future__ import annotations

import asyncio
import json
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from dataclasses import dataclass, field
from typing import Any

import grpc
import pytest
from bertserve_client import (
    AsyncBertServeClient,
    BertServeClient,
    InvalidArgumentError,
    ResourceExhaustedError,
    RetryPolicy,
    UnavailableError,
    _channel,
)
from bertserve_client.v1 import model_pb2, model_pb2_grpc
from certs import Certs, make_certs
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

# Fast retries, so the tests measure gRPC's behaviour rather than its backoff.
FAST_RETRY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.02)
TOKEN = "s3cret-T0ken_value.with/chars+="

# Round-robin over the resolved addresses, skipping any whose health is not SERVING.
BALANCED = {"loadBalancingConfig": [{"round_robin": {}}], "healthCheckConfig": {"serviceName": ""}}


@dataclass(frozen=True)
class Failure:
    """One failed answer: its status code, and optionally a retry delay (pushback trailer and RetryInfo)."""

    code: grpc.StatusCode
    pushback_ms: int | None = None
    retry_info_ms: int | None = None


@dataclass(frozen=True)
class _Status(grpc.Status):
    code: grpc.StatusCode
    details: str
    trailing_metadata: tuple[tuple[str, str | bytes], ...]


@dataclass
class FakeModel(model_pb2_grpc.ModelServiceServicer):
    """Answers GetServerInfo with its name, after failing with the queued failures one call each."""

    name: str
    failures: list[Failure] = field(default_factory=list)
    times: list[float] = field(default_factory=list)
    metadata: list[dict[str, list[str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    @property
    def calls(self) -> int:
        return len(self.times)

    def GetServerInfo(self, request: Any, context: grpc.ServicerContext) -> model_pb2.GetServerInfoResponse:  # noqa: N802
        with self.lock:
            self.times.append(time.monotonic())
            received: dict[str, list[str]] = {}
            for key, value in context.invocation_metadata():
                received.setdefault(key, []).append(value)  # type: ignore[arg-type]
            self.metadata.append(received)
            failure = self.failures.pop(0) if self.failures else None
        if failure is not None:
            context.abort_with_status(_status(failure))
        return model_pb2.GetServerInfoResponse(model=self.name)


def _status(failure: Failure) -> grpc.Status:
    details = []
    if failure.retry_info_ms is not None:
        delay = duration_pb2.Duration()
        delay.FromMilliseconds(failure.retry_info_ms)
        packed = any_pb2.Any()
        packed.Pack(error_details_pb2.RetryInfo(retry_delay=delay))
        details.append(packed)
    code = getattr(code_pb2, failure.code.name)
    rich = rpc_status.to_status(status_pb2.Status(code=code, message="try again later", details=details))
    trailers = tuple(rich.trailing_metadata)
    if failure.pushback_ms is not None:
        trailers += (("grpc-retry-pushback-ms", str(failure.pushback_ms)),)
    return _Status(rich.code, rich.details, trailers)


class FakeServer:
    def __init__(self, name: str, credentials: grpc.ServerCredentials | None = None) -> None:
        self.model = FakeModel(name)
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        model_pb2_grpc.add_ModelServiceServicer_to_server(self.model, self.server)
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.target = f"127.0.0.1:{self.port}"
        self.server.start()

    def stop(self, grace: float | None = None) -> None:
        self.server.stop(grace).wait()


@pytest.fixture
def start_server() -> Iterator[Callable[..., FakeServer]]:
    started: list[FakeServer] = []

    def start(name: str = "fake", credentials: grpc.ServerCredentials | None = None) -> FakeServer:
        started.append(FakeServer(name, credentials))
        return started[-1]

    yield start
    for server in started:
        server.stop()


@pytest.fixture(scope="module")
def certs(tmp_path_factory: pytest.TempPathFactory) -> Certs:
    return make_certs(tmp_path_factory.mktemp("certs"))


# --- the channel plan --------------------------------------------------------


def _plan_options(**kwargs: Any) -> dict[str, Any]:
    return dict(_channel.plan_channel(kwargs.pop("target", "localhost:50051"), **kwargs).options)


def test_service_config_retries_every_bertserve_service() -> None:
    options = _plan_options(retry=RetryPolicy(), keepalive_seconds=30.0)
    config = json.loads(options["grpc.service_config"])
    assert config == {
        "methodConfig": [
            {
                "name": [
                    {"service": f"bertserve.v1.{name}"}
                    for name in (
                        "FillMaskService",
                        "InferenceService",
                        "ModelService",
                        "NextSentenceService",
                        "QuestionAnsweringService",
                        "SentimentService",
                    )
                ],
                "retryPolicy": {
                    "maxAttempts": 5,
                    "initialBackoff": "0.1s",
                    "maxBackoff": "5s",
                    "backoffMultiplier": 2.0,
                    "retryableStatusCodes": ["UNAVAILABLE", "RESOURCE_EXHAUSTED", "CANCELLED"],
                },
            }
        ]
    }
    assert (
        options["grpc.keepalive_time_ms"],
        options["grpc.keepalive_timeout_ms"],
        options["grpc.keepalive_permit_without_calls"],
    ) == (30000, 10000, 1)
    assert "grpc.ssl_target_name_override" not in options and "grpc.default_authority" not in options


def test_service_config_balancing_keepalive_and_user_options() -> None:
    # No retries, no keepalive, one plain target: nothing to configure.
    assert _plan_options(retry=None, keepalive_seconds=None) == {}
    # A dns:/// target (e.g. a Kubernetes headless service) balances round-robin over its addresses.
    dns = json.loads(_plan_options(target="dns:///bert.default.svc:50051")["grpc.service_config"])
    assert dns == BALANCED
    # The caller's options win over those the settings make, and pass through.
    options = _plan_options(
        retry=RetryPolicy(),
        keepalive_seconds=30.0,
        options=[("grpc.keepalive_time_ms", 45000), ("grpc.service_config", "{}"), ("grpc.max_send_message_length", 7)],
    )
    assert options["grpc.keepalive_time_ms"] == 45000
    assert options["grpc.service_config"] == "{}"
    assert options["grpc.max_send_message_length"] == 7
    assert options["grpc.keepalive_timeout_ms"] == 10000
    policy = RetryPolicy(initial_backoff=0.0125, max_backoff=1.5).to_json()
    assert (policy["initialBackoff"], policy["maxBackoff"]) == ("0.0125s", "1.5s")


def test_several_targets_resolve_into_one_round_robin_target() -> None:
    plan = _channel.plan_channel(["localhost:5001", "127.0.0.1:5002", "127.0.0.1:5001"], retry=None)
    # localhost's IPv4 address and 127.0.0.1 on the same port are one endpoint.
    assert plan.target == "ipv4:127.0.0.1:5001,127.0.0.1:5002"
    options = dict(plan.options)
    assert json.loads(options["grpc.service_config"]) == BALANCED
    assert options["grpc.default_authority"] == "localhost:5001"
    assert _channel.plan_channel(["[::1]:5001", "[::1]:5002"]).target == "ipv6:[::1]:5001,[::1]:5002"
    # One target in a sequence is used as given.
    assert _channel.plan_channel(["dns:///bert:50051"]).target == "dns:///bert:50051"
    with pytest.raises(ValueError, match="host:port"):
        _channel.plan_channel(["localhost", "127.0.0.1:1"])
    with pytest.raises(ValueError, match="host:port"):
        _channel.plan_channel(["dns:///a:1", "127.0.0.1:1"])
    with pytest.raises(ValueError, match="mix"):
        _channel.plan_channel(["127.0.0.1:1", "[::1]:2"])
    with pytest.raises(UnavailableError, match="cannot resolve"):
        _channel.plan_channel(["no-such-host.invalid:1", "127.0.0.1:1"])


def test_contradictory_options_are_refused(certs: Certs) -> None:
    ca = certs.ca.cert
    with pytest.raises(ValueError, match="either credentials"):
        BertServeClient(credentials=grpc.ssl_channel_credentials(), root_certificates=ca)
    with pytest.raises(ValueError, match="go together"):
        BertServeClient(root_certificates=ca, client_certificate=certs.client.cert)
    with pytest.raises(ValueError, match="needs TLS"):
        BertServeClient(server_name="localhost")
    with pytest.raises(ValueError, match="tls, options cannot apply"):
        BertServeClient(channel=grpc.insecure_channel("localhost:1"), tls=True, options=[])
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=1)
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=6)
    with pytest.raises(ValueError, match="initial_backoff"):
        RetryPolicy(initial_backoff=0)
    with pytest.raises(TypeError, match="StatusCode"):
        RetryPolicy(retryable_status_codes=("UNAVAILABLE",))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="keepalive"):
        BertServeClient(keepalive_seconds=0)


# --- retries -----------------------------------------------------------------


def test_retries_unavailable_until_success(start_server: Callable[..., FakeServer]) -> None:
    server = start_server()
    server.model.failures = [Failure(grpc.StatusCode.UNAVAILABLE)] * 2
    with BertServeClient(server.target, retry=FAST_RETRY, timeout=5) as client:
        assert client.server_info().model == "fake"
    assert server.model.calls == 3


def test_retries_give_up_after_max_attempts(start_server: Callable[..., FakeServer]) -> None:
    server = start_server()
    server.model.failures = [Failure(grpc.StatusCode.UNAVAILABLE)] * 10
    with BertServeClient(server.target, retry=FAST_RETRY, timeout=5) as client:
        with pytest.raises(UnavailableError, match="try again later"):
            client.server_info()
        assert server.model.calls == 3
        # Codes outside retryable_status_codes fail at once.
        server.model.failures = [Failure(grpc.StatusCode.INVALID_ARGUMENT)]
        with pytest.raises(InvalidArgumentError):
            client.server_info()
        assert server.model.calls == 4
    server.model.failures = [Failure(grpc.StatusCode.UNAVAILABLE)] * 10
    with BertServeClient(server.target, retry=None, timeout=5) as client, pytest.raises(UnavailableError):
        client.server_info()
    assert server.model.calls == 5
    # A service config of the caller's own replaces the retry policy.
    options = [("grpc.service_config", "{}")]
    with BertServeClient(server.target, retry=FAST_RETRY, options=options, timeout=5) as client:
        with pytest.raises(UnavailableError):
            client.server_info()
    assert server.model.calls == 6


def test_resource_exhausted_pushback_is_honoured(start_server: Callable[..., FakeServer]) -> None:
    server = start_server()
    # Backoff alone would retry after at most 20 ms; the server's pushback asks for 300 ms.
    with BertServeClient(server.target, retry=FAST_RETRY, timeout=5) as client:
        server.model.failures = [Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, pushback_ms=300, retry_info_ms=300)]
        started = time.monotonic()
        assert client.server_info().model == "fake"
        with_pushback = time.monotonic() - started
        gap = server.model.times[1] - server.model.times[0]

        server.model.failures = [Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, retry_info_ms=300)]
        started = time.monotonic()
        assert client.server_info().model == "fake"
        without_pushback = time.monotonic() - started
    assert server.model.calls == 4
    assert with_pushback >= 0.29 and gap >= 0.29, (with_pushback, gap)
    assert with_pushback < 2.0
    assert without_pushback < 0.2, without_pushback


def test_errors_expose_the_retry_delay(start_server: Callable[..., FakeServer]) -> None:
    server = start_server()
    server.model.failures = [Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, pushback_ms=50, retry_info_ms=50)] * 2
    policy = RetryPolicy(max_attempts=2, initial_backoff=0.01, max_backoff=0.01)
    with BertServeClient(server.target, retry=policy, timeout=5) as client:
        with pytest.raises(ResourceExhaustedError) as caught:
            client.server_info()
        assert server.model.calls == 2
        assert caught.value.retry_delay == pytest.approx(0.05)
        server.model.failures = [Failure(grpc.StatusCode.UNAVAILABLE)] * 3
        with pytest.raises(UnavailableError) as unavailable:
            client.server_info()
        assert unavailable.value.retry_delay is None


# --- several targets ---------------------------------------------------------


def test_round_robin_spreads_calls_and_survives_a_stopped_server(start_server: Callable[..., FakeServer]) -> None:
    servers = [start_server(f"fake-{i}") for i in range(3)]
    targets = [f"localhost:{servers[0].port}", servers[1].target, servers[2].target]
    failures: list[BaseException] = []
    done = 0

    def call_repeatedly(client: BertServeClient, count: int) -> None:
        nonlocal done
        for _ in range(count):
            try:
                client.server_info()
            except BaseException as err:  # noqa: BLE001 - collected for the assertion
                failures.append(err)
            done += 1

    with BertServeClient(targets, timeout=5) as client:
        # The first calls may all go to the first server to connect; then they take turns.
        names = [client.server_info().model for _ in range(30)]
        assert all(names.count(f"fake-{i}") >= 5 for i in range(3)), names

        workers = [threading.Thread(target=call_repeatedly, args=(client, 100)) for _ in range(4)]
        for worker in workers:
            worker.start()
        while done < 60:
            time.sleep(0.001)
        # A hard stop: calls in flight there end CANCELLED, which the default policy retries elsewhere.
        servers[1].stop(grace=None)
        stopped_at = time.monotonic()
        for worker in workers:
            worker.join(timeout=10)
        assert not failures, failures[:3]
        after = [client.server_info().model for _ in range(20)]
    # A handler already running may still note its call a moment later; nothing new arrives.
    assert all(t < stopped_at + 0.1 for t in servers[1].model.times)
    assert set(after) == {"fake-0", "fake-2"}
    assert all(server.model.calls > 10 for server in servers)


# --- bearer token --------------------------------------------------------------


def test_token_goes_with_every_call_and_nowhere_else(start_server: Callable[..., FakeServer]) -> None:
    server = start_server()
    with BertServeClient(server.target, token=TOKEN, timeout=5) as client:
        client.server_info()
        client.server_info()
        assert TOKEN not in repr(client) and TOKEN not in str(client)
    with BertServeClient(server.target, timeout=5) as client:
        client.server_info()
    assert [m.get("authorization") for m in server.model.metadata] == [[f"Bearer {TOKEN}"]] * 2 + [None]
    for bad in ("", "two words", "line\nbreak", "caf\u00e9"):
        with pytest.raises(ValueError, match="token must be") as caught:
            BertServeClient(server.target, token=bad)
        assert not bad or bad not in str(caught.value)


# --- TLS ---------------------------------------------------------------------


def _tls_server(start_server: Callable[..., FakeServer], certs: Certs, *, mutual: bool) -> FakeServer:
    credentials = grpc.ssl_server_credentials(
        [(certs.server.key_pem, certs.server.cert_pem)],
        root_certificates=certs.ca.cert_pem if mutual else None,
        require_client_auth=mutual,
    )
    return start_server("tls", credentials)


def _server_info(target: str | list[str], **kwargs: Any) -> str:
    with BertServeClient(target, timeout=5, retry=None, **kwargs) as client:
        return client.server_info().model


def test_tls_verifies_the_server(start_server: Callable[..., FakeServer], certs: Certs) -> None:
    server = _tls_server(start_server, certs, mutual=False)
    # The CA as a path, as PEM bytes and as PEM text; with a token, too.
    assert _server_info(server.target, root_certificates=certs.ca.cert) == "tls"
    assert _server_info(server.target, root_certificates=certs.ca.cert_pem, token=TOKEN) == "tls"
    assert _server_info(f"localhost:{server.port}", root_certificates=certs.ca.cert_pem.decode()) == "tls"
    assert server.model.metadata[1]["authorization"] == [f"Bearer {TOKEN}"]
    # The server name override is what the certificate is checked against.
    assert _server_info(server.target, root_certificates=certs.ca.cert, server_name="localhost") == "tls"
    with pytest.raises(UnavailableError):
        _server_info(server.target, root_certificates=certs.ca.cert, server_name="other.example")
    # An unrelated CA, the system roots, or plain text: no connection.
    with pytest.raises(UnavailableError):
        _server_info(server.target, root_certificates=certs.other_ca.cert)
    with pytest.raises(UnavailableError):
        _server_info(server.target, tls=True)
    with pytest.raises(UnavailableError):
        _server_info(server.target)
    # A ready-made credentials object still works.
    assert _server_info(server.target, credentials=grpc.ssl_channel_credentials(certs.ca.cert_pem)) == "tls"
    assert server.model.calls == 5


def test_mutual_tls_needs_the_client_certificate(start_server: Callable[..., FakeServer], certs: Certs) -> None:
    server = _tls_server(start_server, certs, mutual=True)
    client_cert = {"client_certificate": certs.client.cert, "client_key": certs.client.key}
    assert _server_info(server.target, root_certificates=certs.ca.cert, **client_cert) == "tls"
    with pytest.raises(UnavailableError):
        _server_info(server.target, root_certificates=certs.ca.cert)
    with pytest.raises(UnavailableError):
        _server_info(
            server.target,
            root_certificates=certs.ca.cert,
            client_certificate=certs.other_client.cert_pem,
            client_key=certs.other_client.key_pem,
        )
    assert server.model.calls == 1


def test_tls_over_several_targets(start_server: Callable[..., FakeServer], certs: Certs) -> None:
    servers = [_tls_server(start_server, certs, mutual=True) for _ in range(2)]
    targets = [servers[0].target, f"localhost:{servers[1].port}"]
    with BertServeClient(
        targets,
        timeout=5,
        root_certificates=certs.ca.cert,
        client_certificate=certs.client.cert,
        client_key=certs.client.key,
    ) as client:
        for _ in range(10):
            client.server_info()
    assert all(server.model.calls >= 3 for server in servers), [server.model.calls for server in servers]


# --- asyncio -----------------------------------------------------------------


def test_async_client_retries_and_sends_the_token(start_server: Callable[..., FakeServer], certs: Certs) -> None:
    server = start_server()
    tls_server = _tls_server(start_server, certs, mutual=True)
    client = AsyncBertServeClient(server.target, retry=FAST_RETRY, token=TOKEN, timeout=5)
    tls_client = AsyncBertServeClient(
        f"localhost:{tls_server.port}",
        root_certificates=certs.ca.cert,
        client_certificate=certs.client.cert,
        client_key=certs.client.key,
        token=TOKEN,
        timeout=5,
    )
    assert TOKEN not in repr(client)

    async def scenario() -> None:
        async with client, tls_client:
            server.model.failures = [Failure(grpc.StatusCode.UNAVAILABLE)] * 2
            assert (await client.server_info()).model == "fake"
            assert server.model.calls == 3
            server.model.failures = [Failure(grpc.StatusCode.UNAVAILABLE)] * 5
            with pytest.raises(UnavailableError):
                await client.server_info()
            assert server.model.calls == 6
            server.model.failures = [Failure(grpc.StatusCode.RESOURCE_EXHAUSTED, pushback_ms=300)]
            started = time.monotonic()
            await client.server_info()
            assert time.monotonic() - started >= 0.29
            assert (await tls_client.server_info()).model == "tls"

    asyncio.run(scenario())
    assert all(m["authorization"] == [f"Bearer {TOKEN}"] for m in server.model.metadata + tls_server.model.metadata)
