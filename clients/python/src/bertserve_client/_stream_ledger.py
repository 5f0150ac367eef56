"""Resending a broken stream, the pure core: which inputs are unanswered and whether to try again.

A stream that breaks (its replica died) is opened again and the inputs it
left unanswered are sent again. :class:`StreamLedger` holds the inputs sent
and not answered yet, :class:`StreamRetry` decides whether and when to try
again, and :class:`StreamFeed` ties them to the attempts: which request each
attempt sends next (the unanswered inputs of the attempts before it, then new
ones from the caller's inputs) and which results are new.
"""

from __future__ import annotations

import enum
import logging
import random
import time
from collections import deque
from collections.abc import (
    Callable,
)
from dataclasses import dataclass, field
from typing import Literal

from ._channel import RetryPolicy
from ._streams import MESSAGE_IDS, Request, Response, StreamResult, stream_result
from .errors import BertServeError, InternalError

log = logging.getLogger("bertserve_client._streams")  # one logger for everything about streams


class StreamLedger:
    """The inputs sent on a stream and not answered yet: a multiset of ids, in the order first sent.

    Each input sent gets the next sequence number. A result for an id settles
    the earliest unanswered input with that id, so inputs sharing an id are
    matched to its results in the order sent; a result for an id with no
    unanswered input (a late duplicate) settles nothing.
    """

    def __init__(self) -> None:
        self._pending: dict[int, Request] = {}  # by sequence number, in send order
        self._by_id: dict[str, deque[int]] = {}
        self._last = -1

    def __len__(self) -> int:
        return len(self._pending)

    @property
    def last(self) -> int:
        """The sequence number of the last input sent; -1 before any."""
        return self._last

    def sent(self, request: Request) -> int:
        """Note an input sent; its sequence number."""
        self._last += 1
        self._pending[self._last] = request
        self._by_id.setdefault(request.id, deque()).append(self._last)
        return self._last

    def answered(self, input_id: str) -> bool:
        """Settle the earliest unanswered input with this id; False when there is none (a duplicate)."""
        numbers = self._by_id.get(input_id)
        if not numbers:
            return False
        del self._pending[numbers.popleft()]
        if not numbers:
            del self._by_id[input_id]
        return True

    def get(self, number: int) -> Request | None:
        """The input with this sequence number, or None when it was answered."""
        return self._pending.get(number)

    def after(self, number: int) -> list[int]:
        """The sequence numbers of the unanswered inputs sent after ``number``, in send order."""
        newer: list[int] = []
        for pending in reversed(self._pending):
            if pending <= number:
                break
            newer.append(pending)
        newer.reverse()
        return newer

    def unanswered(self) -> list[Request]:
        """The unanswered inputs, in the order first sent."""
        return list(self._pending.values())

    def unanswered_ids(self) -> list[str]:
        """The ids of the unanswered inputs, in the order first sent (an id twice if two inputs share it)."""
        return [request.id for request in self._pending.values()]


@dataclass
class StreamRetry:
    """Whether and when a broken stream is opened again: the client's RetryPolicy, within the stream's deadline.

    The policy's ``max_attempts`` counts attempts as gRPC counts a call's,
    except that an attempt that got a result before it broke starts the
    count again as the first of a new run: at most ``max_attempts - 1``
    attempts in a row that get no result follow it. So a long stream
    outlives any number of replica crashes as long as it makes progress in
    between. Before attempt ``n + 1`` of a run it waits a random delay of up
    to ``min(initial_backoff * backoff_multiplier ** (n - 1), max_backoff)``
    seconds, as gRPC does for unary calls, or the server's RetryInfo delay
    when the failure carried one; never past the stream's deadline.
    """

    policy: RetryPolicy | None
    timeout: float | None
    clock: Callable[[], float] = time.monotonic
    uniform: Callable[[float, float], float] = random.uniform
    failures: int = field(default=0, init=False)

    def __post_init__(self) -> None:
        self.deadline = None if self.timeout is None else self.clock() + self.timeout

    def remaining(self) -> float | None:
        """The timeout of the next attempt: what is left of the stream's deadline."""
        return None if self.deadline is None else max(0.0, self.deadline - self.clock())

    def delay(self, error: BertServeError, *, progressed: bool) -> float | None:
        """Seconds to wait before the next attempt after ``error``; None to give up."""
        policy = self.policy
        if policy is None or error.code not in policy.retryable_status_codes:
            return None
        self.failures = 1 if progressed else self.failures + 1
        if self.failures >= policy.max_attempts:
            return None
        if error.retry_delay is not None:
            delay = error.retry_delay
        else:
            bound = policy.initial_backoff * policy.backoff_multiplier ** (self.failures - 1)
            delay = self.uniform(0.0, min(bound, policy.max_backoff))
        if self.deadline is not None and self.clock() + delay >= self.deadline:
            return None
        return delay


class Step(enum.Enum):
    """What an attempt's request iterator does next when it has no request to send."""

    PULL = "pull"  # take the next input from the caller's inputs
    STOP = "stop"  # end this attempt's requests (a newer attempt started, or the inputs ended)


@dataclass
class StreamAttempt:
    """One call of a stream: its number, and the inputs of the ledger it has still to send."""

    number: int
    first_new: int  # ledger sequence numbers from here on were sent after this attempt began
    cursor: int = -1  # the last sequence number queued for this attempt
    backlog: deque[int] = field(default_factory=deque)
    answered: int = 0


class StreamFeed:
    """The pure core of a resending stream: the ledger, the attempts, the results, the failures.

    No threads and no I/O: the feeders call it under their locks. Attempt
    ``n``'s requests are the unanswered inputs of the ledger, oldest first,
    then inputs pulled from the caller's source. An attempt that is not the
    newest stops; an input it pulled after a newer attempt began stays in
    the ledger and the newest attempt sends it.
    """

    def __init__(self, retry: StreamRetry) -> None:
        self.ledger = StreamLedger()
        self.retry = retry
        self.current = StreamAttempt(0, 0)
        self.exhausted = False  # the source ended
        self.source_failed = False  # the source raised: the stream fails as it did, without resending
        self.answered = 0
        self.resent = 0

    def begin(self) -> StreamAttempt:
        """Start a new attempt; every older one stops."""
        self.current = StreamAttempt(self.current.number + 1, first_new=self.ledger.last + 1)
        return self.current

    def next_request(self, attempt: StreamAttempt) -> Request | Literal[Step.PULL, Step.STOP]:
        """The unanswered input ``attempt`` sends next, else whether to pull a new one or stop."""
        if attempt is not self.current:
            return Step.STOP
        if self.ledger.last > attempt.cursor:
            attempt.backlog.extend(self.ledger.after(attempt.cursor))
            attempt.cursor = self.ledger.last
        while attempt.backlog:
            number = attempt.backlog.popleft()
            request = self.ledger.get(number)
            if request is not None:
                if number < attempt.first_new:
                    self.resent += 1
                return request
        return Step.STOP if self.exhausted else Step.PULL

    def pulled(self, attempt: StreamAttempt, request: Request | None) -> Request | Literal[Step.STOP]:
        """Note an input ``attempt`` pulled from the source (None: the source ended); what it sends next."""
        if request is None:
            self.exhausted = True
        else:
            self.ledger.sent(request)
        step = self.next_request(attempt)
        assert step is not Step.PULL  # the input just pulled is the next one to send, or the end
        return step

    def answer(self, response: Response) -> StreamResult | None:
        """The result of a response; None for a second result of an input already answered."""
        if not self.ledger.answered(response.id):
            log.debug("PredictStream: dropped a second result for input %r", response.id)
            return None
        self.answered += 1
        self.current.answered += 1
        return stream_result(response)

    def failed(self, error: BertServeError) -> float:
        """Seconds to wait before the next attempt after ``error``.

        Raises:
            BertServeError: ``error``, carrying the unanswered ids, when the stream is not opened again.
        """
        delay = None if self.source_failed else self.retry.delay(error, progressed=self.current.answered > 0)
        if delay is None:
            raise unanswered_error(error, self.ledger.unanswered_ids(), name=self.answered > 0 or self.resent > 0)
        log.info(
            "PredictStream broke (%s); resending its %d unanswered inputs in %.3f s",
            f"{error.code.name}: {error.message}",
            len(self.ledger),
            delay,
        )
        return delay

    def ended(self) -> None:
        """Check the stream ended with every input answered.

        Raises:
            InternalError: The server closed the stream with inputs unanswered.
        """
        if self.ledger:
            error = InternalError("the server ended the stream without answering every input")
            raise unanswered_error(error, self.ledger.unanswered_ids(), name=True)


def unanswered_error(error: BertServeError, ids: list[str], *, name: bool) -> BertServeError:
    """``error`` with ``unanswered`` set to ``ids``, named in its message too when ``name`` is true."""
    error.unanswered = tuple(ids)
    if name and ids:
        shown = ", ".join(repr(input_id) for input_id in ids[:MESSAGE_IDS])
        more = f" and {len(ids) - MESSAGE_IDS} more" if len(ids) > MESSAGE_IDS else ""
        error.message = f"{error.message} ({len(ids)} inputs sent got no result: {shown}{more})"
        error.args = (error.message,)
    return error
