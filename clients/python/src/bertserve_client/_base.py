"""What the blocking and the asyncio client share: construction, sending a call, health polling.

:class:`ClientBase` takes the connection options (documented on each client
class), plans the channel and sends a :class:`~._methods.Call` on it; the
subclass opens the channel (blocking or grpc.aio), awaits or not, and wraps
each function of :mod:`._methods` as one of its methods. :class:`HealthPoll`
keeps the deadline and the last failure of one ``wait_until_ready``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

import grpc

from . import _requests as rq
from ._channel import (
    DEFAULT_KEEPALIVE_S,
    DEFAULT_RETRY,
    ChannelPlan,
    PemSource,
    RetryPolicy,
    bearer_metadata,
    check_no_channel_options,
    display_target,
    plan_channel,
)
from ._methods import Call
from ._timings import TimingsCallback
from .errors import UnavailableError

ChannelT = TypeVar("ChannelT", grpc.Channel, grpc.aio.Channel)


class ClientBase(Generic[ChannelT]):
    """Connection options, the channel and the stubs of a client; see its class for the arguments."""

    # True: the channel opens with the client; False: on first use (grpc.aio binds
    # a channel to the event loop running when it is created).
    _open_at_init: ClassVar[bool] = False

    def __init__(
        self,
        target: str | Sequence[str] = "localhost:50051",
        *,
        timeout: float | None = 30.0,
        channel: ChannelT | None = None,
        credentials: grpc.ChannelCredentials | None = None,
        tls: bool = False,
        root_certificates: PemSource | None = None,
        client_certificate: PemSource | None = None,
        client_key: PemSource | None = None,
        server_name: str | None = None,
        token: str | None = None,
        retry: RetryPolicy | None = DEFAULT_RETRY,
        keepalive_seconds: float | None = DEFAULT_KEEPALIVE_S,
        options: Sequence[tuple[str, Any]] | None = None,
        on_timings: TimingsCallback | None = None,
    ) -> None:
        self.target = display_target(target)
        self.timeout = timeout
        self._on_timings = on_timings
        self._metadata = bearer_metadata(token)
        self._retry = retry  # gRPC retries unary calls; predict_stream resends broken streams with it
        self._plan: ChannelPlan | None = None
        if channel is None:
            self._plan = plan_channel(
                target,
                credentials=credentials,
                tls=tls,
                root_certificates=root_certificates,
                client_certificate=client_certificate,
                client_key=client_key,
                server_name=server_name,
                retry=retry,
                keepalive_seconds=keepalive_seconds,
                options=options,
            )
        else:
            check_no_channel_options(
                credentials, tls, root_certificates, client_certificate, client_key, server_name, options
            )
        self._owns_channel = channel is None
        self._closed = False
        self._channel: ChannelT | None = channel
        self._stubs = rq.Stubs(channel) if channel is not None else None
        if self._open_at_init:
            self._open()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r}, timeout={self.timeout!r})"

    def _open_channel(self, plan: ChannelPlan) -> ChannelT:
        """A new channel as ``plan`` says, of the subclass's kind."""
        raise NotImplementedError

    def _open(self) -> rq.Stubs:
        if self._closed:
            raise RuntimeError(f"{type(self).__name__} is closed")
        if self._stubs is None:
            assert self._plan is not None
            self._channel = self._open_channel(self._plan)
            self._stubs = rq.Stubs(self._channel)
        return self._stubs

    def _send(self, call: Call[Any], *, with_call: bool = False) -> Any:
        """Start ``call``: the response (blocking), or the call object to await (grpc.aio).

        ``with_call`` (blocking only): the response and the finished call, for its trailing metadata.
        """
        rpc: Any = call.rpc(self._open())  # a grpc multi-callable: blocking ones have .with_call
        return (rpc.with_call if with_call else rpc)(
            call.prepared.request,
            timeout=rq.resolve_timeout(call.timeout, self.timeout),
            metadata=self._metadata,
        )


class HealthPoll:
    """One wait for a server's grpc.health.v1 status to be SERVING: the deadline and the last failure."""

    def __init__(self, target: str, timeout: float) -> None:
        self.target = target
        self.timeout = timeout
        self.deadline = time.monotonic() + timeout
        self.last_error: grpc.RpcError | None = None

    def check_timeouts(self) -> Iterator[float]:
        """The timeout of each next Check call, for as long as time is left."""
        while (remaining := self.deadline - time.monotonic()) > 0:
            yield min(remaining, rq.HEALTH_MAX_CHECK_S)

    def serving(self, response: bytes) -> bool:
        """Note a Check call's answer; True when it is SERVING."""
        self.last_error = None
        return response == rq.HEALTH_SERVING_RESPONSE

    def failed(self, error: grpc.RpcError) -> None:
        """Note a failed Check call."""
        self.last_error = error

    def pause(self) -> float:
        """Seconds to wait before the next Check call."""
        return max(0.0, min(rq.HEALTH_POLL_INTERVAL_S, self.deadline - time.monotonic()))

    def error(self) -> UnavailableError:
        """The error to raise when time ran out."""
        return rq.not_ready_error(self.target, self.timeout, self.last_error)
