"""bertserve-client with the oldest grpcio, protobuf and googleapis-common-protos it supports, against a real server.

.ci/run builds `.venv-oldest` with exactly the versions of
tests/client/oldest/requirements.txt (the lower bounds of
clients/python/pyproject.toml) and the client installed there with --no-deps;
tests/client/oldest/exercise_client.py then runs under that environment's
Python against servers started here, from the main environment: every RPC of
both clients, a stream, errors with their google.rpc details, gRPC-core
retries, round-robin with health checks, and mutual TLS with a token.

Skipped, with the reason, where `.venv-oldest` is missing.
"""

from __future__ import annotations

import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from bertserve_client.v1 import model_pb2, model_pb2_grpc
from certs import Certs, make_certs, secured_server
from google.protobuf import any_pb2, duration_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status

REPO = Path(__file__).resolve().parents[2]
OLDEST = REPO / "tests" / "client" / "oldest"
PINS = OLDEST / "requirements.txt"
OLD_PYTHON = REPO / ".venv-oldest" / "bin" / "python"
TOKEN = "oldest-dependencies-token-1"


def pins() -> dict[str, str]:
    """{distribution: version} from the `name==version` lines of requirements.txt."""
    lines = (line.split("#")[0].strip() for line in PINS.read_text().splitlines())
    return dict(line.split("==") for line in lines if line)


def test_pyproject_lower_bounds_are_the_pinned_oldest_versions() -> None:
    if sys.version_info >= (3, 11):
        import tomllib
    else:
        tomllib = pytest.importorskip("tomli")
    project = tomllib.loads((REPO / "clients/python/pyproject.toml").read_text())["project"]
    lower = {}
    for requirement in project["dependencies"]:
        found = re.match(r"([\w.-]+)>=([\w.]+)", requirement)
        assert found, f"{requirement!r} states no lower bound"
        lower[found.group(1)] = found.group(2)
    assert lower == pins()


class FlakyModel(model_pb2_grpc.ModelServiceServicer):
    """GetServerInfo fails with UNAVAILABLE and a 50 ms google.rpc.RetryInfo, except on every third call."""

    def __init__(self) -> None:
        self.calls = 0
        self.lock = threading.Lock()

    def GetServerInfo(self, request: Any, context: grpc.ServicerContext) -> model_pb2.GetServerInfoResponse:  # noqa: N802
        with self.lock:
            self.calls += 1
            answer = self.calls % 3 == 0
        if not answer:
            detail = any_pb2.Any()
            detail.Pack(error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=50_000_000)))
            status = status_pb2.Status(code=code_pb2.UNAVAILABLE, message="try again later", details=[detail])
            context.abort_with_status(rpc_status.to_status(status))
        return model_pb2.GetServerInfoResponse(model="flaky")


@pytest.fixture
def flaky() -> Iterator[tuple[FlakyModel, str]]:
    model = FlakyModel()
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    model_pb2_grpc.add_ModelServiceServicer_to_server(model, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield model, f"127.0.0.1:{port}"
    server.stop(None).wait()


@pytest.fixture
def certs(tmp_path: Path) -> Certs:
    return make_certs(tmp_path / "certs")


@pytest.fixture
def secured(tiny_config: ServerConfig, certs: Certs, tmp_path: Path) -> Iterator[str]:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"{TOKEN} full-access\n")
    with secured_server(tiny_config, certs, tokens) as address:
        yield address


@pytest.mark.skipif(
    not OLD_PYTHON.exists(),
    reason=".venv-oldest is missing; .ci/run builds it: python3 -m venv .venv-oldest && .venv-oldest/bin/pip "
    "install -r tests/client/oldest/requirements.txt && .venv-oldest/bin/pip install --no-deps -e clients/python",
)
def test_client_works_with_the_oldest_dependencies(
    server: BackgroundServer, secured: str, certs: Certs, flaky: tuple[FlakyModel, str], tmp_path: Path
) -> None:
    model, flaky_target = flaky
    command = [str(OLD_PYTHON), str(OLDEST / "exercise_client.py"), server.address, "--flaky-target", flaky_target]
    command += ["--tls-target", secured, "--ca", str(certs.ca.cert), "--token", TOKEN]
    command += ["--cert", str(certs.client.cert), "--key", str(certs.client.key)]
    command += [f"--expect={name}=={version}" for name, version in pins().items()]
    # Run from elsewhere, so that nothing of the checkout but the installed client is importable.
    result = subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=tmp_path)
    output = result.stdout + result.stderr
    assert result.returncode == 0 and "all checks passed" in result.stdout, output
    assert model.calls == 4, output  # three attempts of the retried call, then one without retries
