"""`bertserve serve` as a real subprocess: start it on free ports, wait for SERVING, signal it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

_LISTENING = re.compile(r"listening on \S+:(\d+) \(loading")
_METRICS = re.compile(r"metrics on http://\S+:(\d+)/metrics")


class ServerProcess:
    """One server process; its log lines are collected from stderr as they come."""

    def __init__(self, args: Sequence[str], env: dict[str, str] | None = None, port: int = 0) -> None:
        command = [sys.executable, "-m", "bertserve", "serve", "--host", "127.0.0.1", "--port", str(port), *args]
        if "--metrics-port" not in args and "--no-metrics" not in args:
            command += ["--metrics-port", "0", "--metrics-host", "127.0.0.1"]
        environment = {key: value for key, value in os.environ.items() if not key.startswith("BERTSERVE_")}
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env={**environment, "HF_HUB_OFFLINE": "1", **(env or {})},
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.port = int(self.wait_for_log(_LISTENING).group(1))
        metrics = self.wait_for_log(_METRICS, timeout=5, required=False)
        self.metrics_port = int(metrics.group(1)) if metrics else None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _read(self) -> None:
        assert self.process.stderr is not None
        for line in self.process.stderr:
            self.lines.append(line.rstrip("\n"))

    @property
    def log(self) -> str:
        return "\n".join(self.lines)

    def wait_for_log(
        self, pattern: re.Pattern[str], timeout: float = 120, required: bool = True
    ) -> re.Match[str] | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in list(self.lines):
                if found := pattern.search(line):
                    return found
            if self.process.poll() is not None and not self._reader.is_alive():
                break
            time.sleep(0.02)
        if required:
            raise AssertionError(f"no log line matching {pattern.pattern!r}; log:\n{self.log}")
        return None

    def wait_until_serving(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        with grpc.insecure_channel(self.address) as channel:
            health = health_pb2_grpc.HealthStub(channel)
            while time.monotonic() < deadline:
                assert self.process.poll() is None, f"server exited early:\n{self.log}"
                try:
                    status = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
                except grpc.RpcError:
                    status = None
                if status == health_pb2.HealthCheckResponse.SERVING:
                    return
                time.sleep(0.05)
        raise AssertionError(f"not SERVING after {timeout} s; log:\n{self.log}")

    def terminate(self) -> None:
        """Send SIGTERM, as Kubernetes does when it stops a pod."""
        self.process.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """Send SIGKILL, as a crash or the OOM killer ends a process: no draining, connections reset."""
        self.process.send_signal(signal.SIGKILL)

    def wait(self, timeout: float = 60) -> int:
        code = self.process.wait(timeout)
        self._reader.join(timeout=5)
        return code

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)
