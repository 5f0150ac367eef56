"""Resending a broken stream, the attempts: feeders that share the caller's inputs, and the drivers.

:class:`StreamFeeder` (gRPC's request threads) and :class:`AsyncStreamFeeder`
(asyncio) share one source of inputs among the attempts with locks, and
:func:`resend_stream` / :func:`aresend_stream` run the attempts on a call
opener the client gives, with the bookkeeping of `_stream_ledger`.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
)
from typing import Any, Literal, Protocol

import grpc

from ._stream_ledger import Step, StreamAttempt, StreamFeed
from ._streams import Request, Response, StreamResult
from .errors import BertServeError, error_from_rpc


class _Feeder:
    """What both feeders share: the feed, and its use from the caller's side under the state lock."""

    def __init__(self, feed: StreamFeed, state: contextlib.AbstractContextManager[Any]) -> None:
        self.feed = feed
        self._state = state

    def answer(self, response: Response) -> StreamResult | None:
        with self._state:
            return self.feed.answer(response)

    def failed(self, error: BertServeError) -> float:
        with self._state:
            return self.feed.failed(error)

    def ended(self) -> None:
        with self._state:
            self.feed.ended()


class StreamFeeder(_Feeder):
    """One source of requests shared by the attempts of a blocking stream.

    gRPC's blocking client reads each call's request iterator on a thread of
    its own, which may still be inside the source when the call has failed
    and the next attempt began. ``_state`` guards the feed; ``_source`` is
    entered by one thread at a time, and not needed to send the backlog, so
    a resend never waits for a source that waits for results.
    """

    def __init__(self, source: Iterator[Request], feed: StreamFeed) -> None:
        super().__init__(feed, threading.Lock())
        self._source = source
        self._source_lock = threading.Lock()

    def begin(self) -> Iterator[Request]:
        """The request iterator of a new attempt; the older ones stop."""
        with self._state:
            attempt = self.feed.begin()
        return self._requests(attempt)

    def _requests(self, attempt: StreamAttempt) -> Iterator[Request]:
        while isinstance(request := self._next(attempt), Request):
            yield request

    def _next(self, attempt: StreamAttempt) -> Request | Literal[Step.STOP]:
        with self._state:
            step = self.feed.next_request(attempt)
        if step is not Step.PULL:
            return step
        with self._source_lock:
            with self._state:  # an older attempt may have pulled an input while this one waited
                step = self.feed.next_request(attempt)
            if step is not Step.PULL:
                return step
            request = self._pull()
            with self._state:
                return self.feed.pulled(attempt, request)

    def _pull(self) -> Request | None:
        try:
            return next(self._source, None)
        except Exception:
            with self._state:
                self.feed.source_failed = True
            raise


class AsyncStreamFeeder(_Feeder):
    """One source of requests shared by the attempts of an asyncio stream.

    grpc.aio reads each call's request iterator in a task of its own, which
    may still await the source when the call has failed and the next
    attempt began; an asyncio lock keeps the source to one task at a time.
    """

    def __init__(self, source: AsyncIterator[Request], feed: StreamFeed) -> None:
        super().__init__(feed, contextlib.nullcontext())
        self._source = source
        self._source_lock = asyncio.Lock()

    def begin(self) -> AsyncIterator[Request]:
        """The request iterator of a new attempt; the older ones stop."""
        return self._requests(self.feed.begin())

    async def _requests(self, attempt: StreamAttempt) -> AsyncIterator[Request]:
        while isinstance(request := await self._next(attempt), Request):
            yield request

    async def _next(self, attempt: StreamAttempt) -> Request | Literal[Step.STOP]:
        step = self.feed.next_request(attempt)
        if step is not Step.PULL:
            return step
        async with self._source_lock:
            step = self.feed.next_request(attempt)  # an older attempt may have pulled an input meanwhile
            if step is not Step.PULL:
                return step
            return self.feed.pulled(attempt, await self._pull())

    async def _pull(self) -> Request | None:
        try:
            return await anext(self._source, None)
        except Exception:
            self.feed.source_failed = True
            raise


class SyncCall(Protocol):
    """What :func:`resend_stream` needs of a blocking PredictStream call."""

    def __iter__(self) -> Iterator[Response]: ...

    def cancel(self) -> bool: ...


class AsyncCall(Protocol):
    """What :func:`aresend_stream` needs of a grpc.aio PredictStream call."""

    def __aiter__(self) -> AsyncIterator[Response]: ...

    def cancel(self) -> bool: ...


def resend_stream(
    feeder: StreamFeeder,
    open_call: Callable[[Iterator[Request], float | None], SyncCall],
    sleep: Callable[[float], None] = time.sleep,
) -> Iterator[StreamResult]:
    """Each input's result once, over as many attempts as the feed allows; ``open_call(requests, timeout)``."""
    while True:
        call = open_call(feeder.begin(), feeder.feed.retry.remaining())
        try:
            for response in call:
                if (result := feeder.answer(response)) is not None:
                    yield result
            feeder.ended()
            return
        except grpc.RpcError as err:
            delay = feeder.failed(error_from_rpc(err))
        finally:
            call.cancel()  # a no-op once the call ended; drops the server's queued inputs otherwise
        sleep(delay)


async def aresend_stream(
    feeder: AsyncStreamFeeder,
    open_call: Callable[[AsyncIterator[Request], float | None], AsyncCall],
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
) -> AsyncGenerator[StreamResult, None]:
    """:func:`resend_stream` for grpc.aio."""
    while True:
        call = open_call(feeder.begin(), feeder.feed.retry.remaining())
        try:
            async for response in call:
                if (result := feeder.answer(response)) is not None:
                    yield result
            feeder.ended()
            return
        except grpc.RpcError as err:
            delay = feeder.failed(error_from_rpc(err))
        finally:
            call.cancel()  # a no-op once the call ended; drops the server's queued inputs otherwise
        await sleep(delay)
