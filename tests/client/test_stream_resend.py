"""predict_stream resends what a broken stream left unanswered: the pure core, then through a proxy that dies.

The core (`bertserve_client._stream_ledger` and `_stream_resend`) is tested
without a server: the ledger, the feeders sharing one source among attempts (with gRPC's request
threads racing them), and the resending loop on fake calls that break. Then
both clients stream through two TCP proxies to one server; the proxy that
carries the stream stops passing answers on and dies as a SIGKILLed replica
does (connections reset), and the caller still gets every result once.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import socket
import struct
import threading
import time
from collections.abc import AsyncIterator, Callable, Iterator

import grpc
import pytest
from bertserve.background import BackgroundServer
from bertserve_client import (
    AsyncBertServeClient,
    BertServeClient,
    InternalError,
    RequestCancelledError,
    RetryPolicy,
    StreamInput,
    StreamResult,
    UnauthenticatedError,
    UnavailableError,
)
from bertserve_client._stream_ledger import StreamFeed, StreamLedger, StreamRetry
from bertserve_client._stream_resend import AsyncStreamFeeder, StreamFeeder, aresend_stream, resend_stream
from bertserve_client._streams import stream_request, stream_requests
from bertserve_client.v1 import inference_pb2

Request = inference_pb2.PredictStreamRequest
POLICY = RetryPolicy(max_attempts=3, initial_backoff=0.01, max_backoff=0.04)


def request(input_id: str) -> Request:
    return stream_request((input_id, "sentiment", {"text": input_id}), 0)


def requests(*ids: str) -> Iterator[Request]:
    return (request(input_id) for input_id in ids)


def response(input_id: str) -> inference_pb2.PredictStreamResponse:
    return inference_pb2.PredictStreamResponse(id=input_id, head="sentiment")


def feeder(source: Iterator[Request], policy: RetryPolicy | None = POLICY) -> StreamFeeder:
    return StreamFeeder(source, StreamFeed(StreamRetry(policy, timeout=30)))


class FakeRpcError(grpc.RpcError):
    """A failed call as gRPC raises it."""

    def __init__(self, code: grpc.StatusCode, details: str = "Stream removed") -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details

    def trailing_metadata(self) -> tuple[()]:
        return ()


_END = object()


class FakeCall:
    """A PredictStream call as gRPC's blocking client makes it: a thread of its own reads requests ahead.

    It answers the first ``answers`` requests (None: all of them, then ends
    when the requests end), then fails with ``code``; the requests read
    ahead of the failure are lost with it, as on a replica that died.
    """

    def __init__(self, requests: Iterator[Request], answers: int | None, code: grpc.StatusCode) -> None:
        self.answers, self.code = answers, code
        self.read: list[str] = []
        self.dead = threading.Event()
        self._queue: queue.Queue[object] = queue.Queue()
        self._reader = threading.Thread(target=self._read, args=(requests,), daemon=True)
        self._reader.start()

    def _read(self, requests: Iterator[Request]) -> None:
        try:
            for item in requests:
                if self.dead.is_set():
                    return  # gRPC drops a request read after the call ended
                self.read.append(item.id)
                self._queue.put(item)
        except Exception:  # grpc cancels the call (UNKNOWN; CANCELLED in grpc.aio)
            self._queue.put(FakeRpcError(self.code, "Exception iterating requests!"))
            return
        self._queue.put(_END)

    def __iter__(self) -> Iterator[inference_pb2.PredictStreamResponse]:
        answered = 0
        while (item := self._queue.get(timeout=10)) is not _END:
            if isinstance(item, FakeRpcError):
                raise item
            if answered == self.answers:
                self.dead.set()
                raise FakeRpcError(self.code)
            answered += 1
            assert isinstance(item, Request)
            yield response(item.id)

    def cancel(self) -> bool:
        self.dead.set()
        return True


class FakeCalls:
    """Opens a FakeCall per attempt: attempt ``n`` answers ``plan[n]`` requests, then breaks with ``code``."""

    def __init__(self, *plan: int | None, code: grpc.StatusCode = grpc.StatusCode.UNAVAILABLE) -> None:
        self.plan, self.code = list(plan), code
        self.calls: list[FakeCall] = []
        self.sleeps: list[float] = []

    def open(self, requests: Iterator[Request], timeout: float | None) -> FakeCall:
        assert timeout is not None and 0 < timeout <= 30
        answers = self.plan[len(self.calls)] if len(self.calls) < len(self.plan) else self.plan[-1]
        self.calls.append(FakeCall(requests, answers, self.code))
        return self.calls[-1]

    def run(self, stream: StreamFeeder) -> list[StreamResult]:
        return list(resend_stream(stream, self.open, self.sleeps.append))


# ---- the ledger -------------------------------------------------------------------------------------------------


def test_the_ledger_is_a_multiset_of_ids_in_the_order_first_sent() -> None:
    ledger = StreamLedger()
    numbers = [ledger.sent(request(input_id)) for input_id in ("a", "b", "a", "c")]
    assert numbers == [0, 1, 2, 3] and ledger.last == 3 and len(ledger) == 4
    assert ledger.answered("a")  # settles the first "a"
    assert ledger.unanswered_ids() == ["b", "a", "c"] and ledger.get(0) is None and ledger.get(2) is not None
    assert ledger.answered("a") and not ledger.answered("a")  # a third "a" is a duplicate: nothing to settle
    assert not ledger.answered("never-sent")
    assert [r.id for r in ledger.unanswered()] == ["b", "c"]
    assert ledger.after(-1) == [1, 3] and ledger.after(1) == [3] and ledger.after(3) == []


def test_retry_backoff_grows_to_its_cap_honours_retry_info_and_stops_at_the_deadline() -> None:
    now = [100.0]
    policy = RetryPolicy(max_attempts=5, initial_backoff=0.1, max_backoff=0.3, backoff_multiplier=2.0)
    retry = StreamRetry(policy, timeout=10, clock=lambda: now[0], uniform=lambda low, high: high)
    broken = UnavailableError("gone")
    assert [retry.delay(broken, progressed=False) for _ in range(5)] == [0.1, 0.2, 0.3, 0.3, None]
    assert retry.delay(broken, progressed=True) == 0.1  # an attempt with a result starts the count again
    assert retry.delay(UnauthenticatedError("no"), progressed=True) is None  # not a retryable code
    pushback = UnavailableError("draining", retry_delay=2.5)
    assert retry.delay(pushback, progressed=True) == 2.5
    now[0] = 108.0
    assert retry.remaining() == 2.0 and retry.delay(pushback, progressed=True) is None  # past the deadline
    assert StreamRetry(None, timeout=None).delay(broken, progressed=True) is None
    assert StreamRetry(None, timeout=None).remaining() is None


# ---- the feeders ------------------------------------------------------------------------------------------------


def test_an_older_attempt_stops_and_the_newer_resends_its_unanswered_inputs_first() -> None:
    source = requests("a", "b", "c", "d", "e")
    stream = feeder(source)
    first = stream.begin()
    assert [next(first).id for _ in range(3)] == ["a", "b", "c"]
    assert stream.answer(response("b")) is not None
    second = stream.begin()
    assert next(first, None) is None  # stale: it pulls nothing more from the source
    assert [r.id for r in second] == ["a", "c", "d", "e"]  # the unanswered in send order, then the source
    assert next(source, None) is None and stream.feed.resent == 2 and stream.feed.exhausted
    assert next(stream.begin(), None) is not None  # "a", "c", "d", "e" are still unanswered: a third sends them


def test_an_input_an_older_attempt_pulls_late_goes_out_on_the_newer_one() -> None:
    # gRPC's request thread of the broken call may be inside the source when the next attempt begins.
    release, inside = threading.Event(), threading.Event()

    def source() -> Iterator[Request]:
        yield request("a")
        inside.set()
        assert release.wait(10)
        yield request("b")
        yield request("c")

    stream = feeder(source())
    first = stream.begin()
    assert next(first).id == "a"
    late: list[Request | None] = []
    reader = threading.Thread(target=lambda: late.append(next(first, None)))
    reader.start()
    assert inside.wait(10)
    second = stream.begin()
    assert next(second).id == "a"  # the resend does not wait for the source, which the old thread holds
    pulled: list[str] = []
    waiter = threading.Thread(target=lambda: pulled.extend(r.id for r in second))
    waiter.start()
    time.sleep(0.05)
    assert pulled == []  # the newer attempt waits for the source behind the older one
    release.set()
    reader.join(10)
    waiter.join(10)
    assert late == [None]  # "b" was pulled by the older attempt, which stopped without sending it ...
    assert pulled == ["b", "c"]  # ... and the newer one sent it, once, before the rest
    assert stream.feed.ledger.unanswered_ids() == ["a", "b", "c"]


def test_duplicate_ids_are_answered_in_the_order_sent_and_a_late_duplicate_is_dropped() -> None:
    stream = feeder(requests("x", "x", "y"))
    assert [r.id for r in stream.begin()] == ["x", "x", "y"]
    assert stream.answer(response("x")) is not None
    assert [r.id for r in stream.begin()] == ["x", "y"]  # one "x" is still owed
    assert stream.answer(response("x")) is not None and stream.answer(response("y")) is not None
    assert stream.answer(response("x")) is None  # a late second result: dropped
    stream.ended()  # every input answered: no complaint


def test_the_server_ending_a_stream_with_inputs_unanswered_is_reported() -> None:
    stream = feeder(requests("p", "q"))
    list(stream.begin())
    stream.answer(response("q"))
    with pytest.raises(InternalError, match="'p'") as caught:
        stream.ended()
    assert caught.value.unanswered == ("p",)


# ---- the resending loop on fake calls ---------------------------------------------------------------------------


def test_a_broken_stream_resends_what_it_left_unanswered_and_yields_each_result_once(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ids = [f"i{n}" for n in range(30)]
    calls = FakeCalls(4, 0, None)  # breaks after 4 results, then before any, then answers everything
    with caplog.at_level(logging.INFO, logger="bertserve_client._streams"):
        results = calls.run(feeder(requests(*ids)))
    assert sorted(r.id for r in results) == sorted(ids) and len(results) == len(ids)
    assert len(calls.calls) == 3 and len(calls.sleeps) == 2
    assert all(0 <= delay <= POLICY.max_backoff for delay in calls.sleeps)
    # The second and third attempts sent the unanswered inputs first, in the order first sent.
    second, third = calls.calls[1].read, calls.calls[2].read
    assert second and second == ids[4 : 4 + len(second)]
    assert third == ids[4:]  # nothing twice, nothing lost
    assert [r.message for r in caplog.records][0].startswith("PredictStream broke (UNAVAILABLE: Stream removed)")


def test_with_every_attempt_spent_the_unanswered_ids_are_reported() -> None:
    calls = FakeCalls(2, 0, 0, 0)
    with pytest.raises(UnavailableError) as caught:
        calls.run(feeder(requests("a", "b", "c", "d")))
    error = caught.value
    # The attempt that got results and broke counts as the first of max_attempts, as a new call's first would.
    assert len(calls.calls) == POLICY.max_attempts
    assert error.unanswered == ("c", "d") and error.code is grpc.StatusCode.UNAVAILABLE
    assert error.message == "Stream removed (2 inputs sent got no result: 'c', 'd')"


def test_each_attempt_with_a_result_starts_the_count_again() -> None:
    calls = FakeCalls(1, 1, 1, 1, 1, 1, None)  # six breaks, more than max_attempts, each after progress
    results = calls.run(feeder(requests(*"abcdefgh")))
    assert sorted(r.id for r in results) == list("abcdefgh") and len(calls.calls) == 7


def test_a_status_not_retried_before_any_result_is_raised_as_before() -> None:
    calls = FakeCalls(0, code=grpc.StatusCode.UNAUTHENTICATED)
    with pytest.raises(UnauthenticatedError) as caught:
        calls.run(feeder(requests("a", "b")))
    assert len(calls.calls) == 1 and calls.sleeps == []
    assert caught.value.message == "Stream removed"  # the message as it always was
    assert set(caught.value.unanswered) <= {"a", "b"}  # what the reader had sent when the call failed


def test_without_a_retry_policy_a_break_is_reported_not_resent() -> None:
    calls = FakeCalls(1)
    with pytest.raises(UnavailableError, match="got no result: 'b'") as caught:
        calls.run(feeder(requests("a", "b", "c"), policy=None))
    # "b" was sent and not answered; "c" too if the call's reader had taken it when the call broke.
    assert len(calls.calls) == 1 and caught.value.unanswered in (("b",), ("b", "c"))


def test_a_source_that_raises_fails_the_stream_without_a_resend() -> None:
    def source() -> Iterator[Request]:
        yield request("a")
        raise ValueError("bad input")

    calls = FakeCalls(None, code=grpc.StatusCode.CANCELLED)  # grpc.aio cancels a call whose requests raise
    with pytest.raises(RequestCancelledError, match="Exception iterating requests"):
        calls.run(feeder(source()))
    assert len(calls.calls) == 1  # CANCELLED is retryable, but not when the caller's own inputs failed


class FakeAsyncCall:
    """A grpc.aio PredictStream call: a task reads the requests; it answers ``answers`` of them, then breaks."""

    def __init__(self, requests: AsyncIterator[Request], answers: int | None) -> None:
        self.answers = answers
        self.read: list[str] = []
        self._queue: asyncio.Queue[object] = asyncio.Queue()
        self._reader = asyncio.ensure_future(self._read(requests))

    async def _read(self, requests: AsyncIterator[Request]) -> None:
        async for item in requests:
            self.read.append(item.id)
            await self._queue.put(item)
        await self._queue.put(_END)

    async def __aiter__(self) -> AsyncIterator[inference_pb2.PredictStreamResponse]:
        answered = 0
        while (item := await asyncio.wait_for(self._queue.get(), 10)) is not _END:
            if answered == self.answers:
                raise FakeRpcError(grpc.StatusCode.CANCELLED, "Cancelled on the server side")
            answered += 1
            assert isinstance(item, Request)
            yield response(item.id)

    def cancel(self) -> bool:
        return False


def test_the_async_feeder_resends_too() -> None:
    async def source() -> AsyncIterator[Request]:
        for n in range(12):
            await asyncio.sleep(0)
            yield request(f"n{n}")

    async def run() -> tuple[list[str], list[FakeAsyncCall]]:
        plan = iter([3, 0, None])
        calls: list[FakeAsyncCall] = []

        def open_call(requests: AsyncIterator[Request], timeout: float | None) -> FakeAsyncCall:
            calls.append(FakeAsyncCall(requests, next(plan)))
            return calls[-1]

        stream = AsyncStreamFeeder(source(), StreamFeed(StreamRetry(POLICY, timeout=30)))
        return [r.id async for r in aresend_stream(stream, open_call)], calls

    ids, calls = asyncio.run(run())
    assert sorted(ids) == sorted(f"n{n}" for n in range(12)) and len(ids) == 12
    assert len(calls) == 3 and calls[2].read[0] == "n3"  # the first unanswered input went first


# ---- through proxies that die -----------------------------------------------------------------------------------


class Proxy:
    """A TCP proxy to a server: ``hold()`` stops passing the server's bytes on, ``kill()`` dies as a SIGKILL does.

    Killing closes the listening socket and resets every connection (an
    abortive close: RST), so the client sees what a dead replica gives it.
    """

    def __init__(self, upstream: str) -> None:
        host, port = upstream.rsplit(":", 1)
        self._upstream = (host, int(port))
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.address = f"127.0.0.1:{self._listener.getsockname()[1]}"
        self.bytes_up = 0  # bytes from the client to the server
        self._flowing = threading.Event()
        self._flowing.set()
        self._sockets: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
                server = socket.create_connection(self._upstream)
            except OSError:
                return
            self._sockets += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket, up: bool) -> None:
        try:
            while data := source.recv(65536):
                if up:
                    self.bytes_up += len(data)
                else:
                    self._flowing.wait()
                sink.sendall(data)
        except OSError:
            pass

    def hold(self) -> None:
        self._flowing.clear()

    def kill(self) -> None:
        try:
            self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread
        except OSError:
            pass
        self._listener.close()
        for sock in list(self._sockets):
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RD)  # wakes the pump reading it
            except OSError:
                pass
            sock.close()  # with linger 0: a reset
        self._flowing.set()


class Script:
    """A stream's inputs in three parts: 10, then (after ``go``) 20, then (after ``resume``) 10 more.

    The caller holds the answers of the proxy carrying the stream before the
    second part and kills it after the second part went out, so the 20 are
    sent and unanswered when the stream breaks. The third part comes as the
    stream breaks, so gRPC's request thread of the broken call takes its
    first input; or, with ``resume_after_resend``, once the new stream has
    resent the 20. (grpc.aio needs the latter: a request it writes on a call
    whose connection was just reset can make the call end with INTERNAL
    "Internal error from Core" in place of UNAVAILABLE, grpc/grpc#36066,
    which is not retried.)
    """

    IDS = [f"r{n}" for n in range(40)]

    def __init__(self, proxies: list[Proxy], *, resume_after_resend: bool = False) -> None:
        self.proxies = proxies
        self.resume_after_resend = resume_after_resend
        self.go, self.second_sent, self.resume = threading.Event(), threading.Event(), threading.Event()
        self.victim: Proxy | None = None
        self.before = [0, 0]  # each proxy's bytes up when the stream started, and when the victim died
        self.at_kill = [0, 0]

    def started(self) -> None:
        self.before = [proxy.bytes_up for proxy in self.proxies]

    def inputs(self, n: int) -> StreamInput:
        return StreamInput("sentiment", {"text": f"review number {n}"}, id=self.IDS[n])

    def sync_inputs(self) -> Iterator[StreamInput]:
        self.started()
        for n in range(40):
            if n in (10, 30):
                assert (self.go if n == 10 else self.resume).wait(10)
            yield self.inputs(n)
            if n == 29:
                self.second_sent.set()

    def on_result(self, count: int) -> None:
        if count == 10:  # the first part answered: break the stream in the second
            # The stream's proxy carried its 10 inputs; the other only health checks.
            grown = [proxy.bytes_up - before for proxy, before in zip(self.proxies, self.before)]
            self.victim = self.proxies[grown.index(max(grown))]
            self.victim.hold()
            self.go.set()
            threading.Thread(target=self._kill, daemon=True).start()

    def _kill(self) -> None:
        assert self.second_sent.wait(10) and self.victim is not None
        time.sleep(0.2)  # the second part on its way to the server
        self.at_kill = [proxy.bytes_up for proxy in self.proxies]
        self.victim.kill()
        if self.resume_after_resend:
            survivor = self.proxies[1 - self.proxies.index(self.victim)]
            deadline = time.monotonic() + 10
            while survivor.bytes_up - self.at_kill[1 - self.proxies.index(self.victim)] < 1000:
                assert time.monotonic() < deadline, "the stream was not resent"
                time.sleep(0.01)
        self.resume.set()

    def check(self, results: list[StreamResult], log: list[str]) -> None:
        assert sorted(r.id for r in results) == sorted(self.IDS) and len(results) == 40  # each input once
        assert all(r.ok and r.output is not None for r in results)
        assert log and log[0].startswith("PredictStream broke (UNAVAILABLE"), log
        resent = int(log[0].split("resending its ")[1].split()[0])
        assert resent >= 20  # the second part, at least, went out twice
        survivor = 1 - self.proxies.index(self.victim) if self.victim is not None else 0
        assert self.proxies[survivor].bytes_up - self.at_kill[survivor] > 1000  # the new stream took the live proxy


@pytest.fixture
def proxies(server: BackgroundServer) -> Iterator[list[Proxy]]:
    pair = [Proxy(server.address), Proxy(server.address)]
    yield pair
    for proxy in pair:
        if proxy._listener.fileno() != -1:
            proxy.kill()


def _broke(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == "bertserve_client._streams"]


def test_a_stream_whose_replica_dies_still_answers_every_input_once(
    proxies: list[Proxy], caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(proxies)
    results: list[StreamResult] = []
    with caplog.at_level(logging.INFO, logger="bertserve_client._streams"):
        with BertServeClient([proxy.address for proxy in proxies], timeout=60) as client:
            client.wait_until_ready(10)
            for result in client.predict_stream(script.sync_inputs()):
                results.append(result)
                script.on_result(len(results))
    script.check(results, _broke(caplog))


def test_an_async_stream_whose_replica_dies_still_answers_every_input_once(
    proxies: list[Proxy], caplog: pytest.LogCaptureFixture
) -> None:
    script = Script(proxies, resume_after_resend=True)

    async def inputs() -> AsyncIterator[StreamInput]:
        wait: Callable[[threading.Event], bool] = lambda event: event.wait(10)
        script.started()
        for n in range(40):
            if n in (10, 30):
                assert await asyncio.to_thread(wait, script.go if n == 10 else script.resume)
            yield script.inputs(n)
            if n == 29:
                script.second_sent.set()

    async def run() -> list[StreamResult]:
        results: list[StreamResult] = []
        async with AsyncBertServeClient([proxy.address for proxy in proxies], timeout=60) as client:
            await client.wait_until_ready(10)
            async for result in client.predict_stream(inputs()):
                results.append(result)
                script.on_result(len(results))
        return results

    with caplog.at_level(logging.INFO, logger="bertserve_client._streams"):
        results = asyncio.run(run())
    script.check(results, _broke(caplog))


def test_stream_requests_number_inputs_for_default_ids() -> None:
    assert [r.id for r in stream_requests([("h", {}), ("own", "h", {}), StreamInput("h", {})])] == ["0", "own", "2"]
