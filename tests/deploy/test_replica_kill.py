"""Crashes with nothing lost: three replicas, one SIGKILLed mid-load and restarted on its port.

A unary load (several threads calling ``client.sentiment``) and a streaming
caller (``client.predict_stream`` over a generator of inputs with unique ids)
run together over three server processes. The replica carrying the stream
is killed with SIGKILL (no draining: its connections are reset with calls in
flight), and a new process is started on the same port. gRPC retries the
unary calls the dead replica held (UNAVAILABLE); the client resends the
stream's unanswered inputs on a live replica. Every unary call succeeds,
every stream input gets exactly one result, and once the restarted replica
is SERVING the client's round-robin reaches it again.
"""

from __future__ import annotations

import logging
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from bertserve_client import BertServeClient, BertServeError, StreamInput
from processes import ServerProcess
from prometheus_client.parser import text_string_to_metric_families

SENTIMENT = "bertserve.v1.SentimentService/ClassifySentiment"
TEXTS = [f"review {i}: a {'fine' if i % 2 else 'dull'} film" for i in range(8)]


def metric(server: ServerProcess, name: str, **labels: str) -> float:
    """The sum of a metric's samples with these labels, from a replica's own metrics endpoint."""
    url = f"http://127.0.0.1:{server.metrics_port}/metrics"
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return sum(
        sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
        if sample.name == name and all(sample.labels.get(key) == value for key, value in labels.items())
    )


def answered_by(server: ServerProcess) -> int:
    """Sentiment calls the replica answered."""
    return int(metric(server, "bertserve_requests_total", method=SENTIMENT, code="OK"))


class UnaryLoad:
    """Threads calling ``client.sentiment`` until stopped; every call's outcome counted."""

    def __init__(self, client: BertServeClient, threads: int) -> None:
        self.client = client
        self.stop = threading.Event()
        self.lock = threading.Lock()
        self.sent = self.answered = self.in_flight = 0
        self.failures: list[str] = []
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for thread in self.threads:
            thread.start()

    def _run(self) -> None:
        while not self.stop.is_set():
            with self.lock:
                self.sent += 1
                self.in_flight += 1
            try:
                results = self.client.sentiment(TEXTS)
                assert len(results) == len(TEXTS) and all(r.label for r in results)
                with self.lock:
                    self.answered += 1
            except (BertServeError, AssertionError) as error:
                with self.lock:
                    self.failures.append(repr(error))
            finally:
                with self.lock:
                    self.in_flight -= 1
            time.sleep(0.01)  # leave the CPUs some room for the restarting replica

    def join(self) -> None:
        self.stop.set()
        for thread in self.threads:
            thread.join(timeout=60)


class StreamCaller:
    """One predict_stream over a generator of inputs with unique ids, fed until stopped."""

    def __init__(self, client: BertServeClient) -> None:
        self.client = client
        self.stop = threading.Event()
        self.sent: list[str] = []
        self.answered: list[str] = []
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _inputs(self) -> Iterator[StreamInput]:
        n = 0
        while not self.stop.is_set():
            self.sent.append(f"s{n}")
            yield StreamInput("sentiment", {"text": f"streamed review {n}"}, id=f"s{n}")
            n += 1
            time.sleep(0.03)

    def _run(self) -> None:
        try:
            for result in self.client.predict_stream(self._inputs(), timeout=120):
                assert result.ok, result
                self.answered.append(result.id)
        except BaseException as error:  # reported by the test
            self.error = error

    def join(self) -> None:
        self.stop.set()
        self.thread.join(timeout=60)


def wait_for(condition: Callable[[], bool], timeout: float, what: str) -> float:
    """Poll ``condition()`` until true; the seconds it took."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"no {what} within {timeout} s"
        time.sleep(0.05)
    return time.monotonic() - start


def start_replicas(args: list[str]) -> list[ServerProcess]:
    with ThreadPoolExecutor(3) as pool:
        replicas = list(pool.map(lambda _: ServerProcess(args), range(3)))
    for replica in replicas:
        replica.wait_until_serving()
    return replicas


def kill_and_restart(killed: ServerProcess, args: list[str]) -> tuple[int, ServerProcess, float]:
    """SIGKILL a replica and start a new one on its port: the exit code, the new process, its seconds to SERVING."""
    killed.kill()
    code = killed.wait(timeout=30)
    killed_at = time.monotonic()
    restarted = ServerProcess(args, port=killed.port)
    try:
        restarted.wait_until_serving()
    except BaseException:
        restarted.__exit__(None, None, None)
        raise
    return code, restarted, time.monotonic() - killed_at


def test_a_replica_sigkilled_mid_load_and_restarted_loses_nothing(
    tiny_checkpoint: Path, head_files: dict[str, Path], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bertserve_client._streams")
    args = ["--model", str(tiny_checkpoint), "--device", "cpu", "--head-file", f"sentiment={head_files['sentiment']}"]
    started = time.monotonic()
    replicas = start_replicas(args)
    started_in = time.monotonic() - started
    processes = list(replicas)
    try:
        # Reconnect to a dead address every second at most (gRPC's default backoff grows to 120 s).
        options = [("grpc.max_reconnect_backoff_ms", 1000)]
        with BertServeClient([r.address for r in replicas], timeout=30, options=options) as client:
            client.wait_until_ready(30)
            stream = StreamCaller(client)
            wait_for(lambda: len(stream.answered) >= 10, 30, "stream results")
            # The stream is the only bertserve RPC in flight: its replica is the one to kill.
            carrying = [metric(r, "bertserve_requests_in_flight") for r in replicas]
            assert sorted(carrying) == [0, 0, 1], carrying
            killed = replicas[carrying.index(1)]
            load = UnaryLoad(client, threads=3)
            time.sleep(1.0)
            wait_for(lambda: load.answered >= 6, 30, "unary answers")  # on a busy machine, a slow start
            before = [answered_by(r) for r in replicas]
            in_flight_at_kill, answered_at_kill = load.in_flight, load.answered
            code, restarted, serving_after = kill_and_restart(killed, args)
            processes.append(restarted)
            reached_after = serving_after + wait_for(lambda: answered_by(restarted) > 0, 20, "answer from the restart")
            time.sleep(1.5)
            load.join()
            stream.join()
        survivors = [answered_by(r) for r in replicas if r is not killed]
        restarted_share = answered_by(restarted)
    finally:
        for process in processes:
            process.__exit__(None, None, None)

    breaks = [r.getMessage() for r in caplog.records if r.name == "bertserve_client._streams"]
    resent = sum(int(line.split("resending its ")[1].split()[0]) for line in breaks)
    print(
        f"\n3 replicas, the stream's SIGKILLed mid-load and restarted on its port: unary sent {load.sent}, "
        f"answered {load.answered}, failed {len(load.failures)} ({in_flight_at_kill} in flight at the kill, "
        f"those on the dead replica retried by gRPC); stream sent {len(stream.sent)}, answered "
        f"{len(stream.answered)} ({len(set(stream.answered))} distinct), broke {len(breaks)} time(s), resent {resent}; "
        f"unary per replica before the kill {before}, survivors at the end {survivors}, restarted {restarted_share}; "
        f"replicas up in {started_in:.1f} s, the restart SERVING {serving_after:.1f} s after the kill and "
        f"answering after {reached_after:.1f} s; "
        f"break: {breaks[0] if breaks else '-'}"
    )
    assert load.failures == [], load.failures[:5]
    assert load.sent == load.answered > answered_at_kill
    assert stream.error is None, repr(stream.error)
    assert sorted(stream.answered) == sorted(stream.sent) and len(set(stream.answered)) == len(stream.answered)
    assert breaks  # the stream broke with its replica (what it had unanswered there, if anything, was resent)
    assert code == -9, killed.log
    assert restarted_share > 0  # the client's round-robin reached the replica restarted on the port
