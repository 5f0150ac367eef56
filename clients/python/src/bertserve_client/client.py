"""The blocking bertserve client.

Its RPC methods are the functions of :mod:`._methods`, each made into a
method that sends the planned call and waits for the result.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from types import TracebackType
from typing import Concatenate, ParamSpec, TypeVar

import grpc

from . import _methods as api, _requests as rq
from ._base import ClientBase, HealthPoll
from ._channel import ChannelPlan
from ._methods import Call
from ._requests import USE_CLIENT_DEFAULT, Timeout
from ._stream_ledger import StreamFeed, StreamRetry
from ._stream_resend import StreamFeeder, resend_stream
from ._streams import PREDICT_STREAM_DOC, StreamItem, StreamResult, stream_requests
from ._timings import report_timings
from .errors import error_from_rpc

__all__ = ["BertServeClient"]

P = ParamSpec("P")
T = TypeVar("T")


def _blocking(plan: Callable[P, Call[T]]) -> Callable[Concatenate[BertServeClient, P], T]:
    """The BertServeClient method that makes the call ``plan`` plans and returns its result."""

    def method(self: BertServeClient, /, *args: P.args, **kwargs: P.kwargs) -> T:
        return self._invoke(plan(*args, **kwargs))

    return api.dress_as_method(method, plan, "BertServeClient")


class BertServeClient(ClientBase[grpc.Channel]):
    """Blocking client of a bertserve server.

    Every method accepts one input and returns one result, or a sequence of
    inputs and returns a list of results in the same order (sent as one
    request, which the server batches). Failed calls raise a
    :class:`~bertserve_client.errors.BertServeError` subclass.

    Args:
        target: ``host:port`` of the server, any gRPC target such as
            ``dns:///name:port`` (every address the name resolves to, e.g.
            the pods of a Kubernetes headless service, round-robin), or a
            sequence of ``host:port`` strings: their host names are resolved
            once, here, and calls go round-robin over all the addresses.
        timeout: Default deadline of each call in seconds; None for no deadline.
            Every method takes a ``timeout`` keyword to override it per call.
        channel: An existing channel to use instead of opening one; it is not
            closed by :meth:`close`. Only ``timeout`` and ``token`` apply to
            it; the other connection options are the channel's own business.
        credentials: Ready-made channel credentials, instead of ``tls`` and the
            PEM options; without any of them the channel is insecure.
        tls: Use TLS, verified against the system's root certificates
            unless ``root_certificates`` is given.
        root_certificates: The CA certificate(s) that signed the server's
            certificate: PEM bytes, a str holding PEM text, or a file path.
            Implies TLS.
        client_certificate: The client certificate chain for mutual TLS
            (PEM bytes, text or path); needs ``client_key``.
        client_key: The private key of ``client_certificate`` (PEM bytes,
            text or path).
        server_name: The name the server's certificate is checked against,
            instead of the target's host (``grpc.ssl_target_name_override``).
        token: Bearer token sent as ``authorization: Bearer <token>`` metadata
            with every call, over TLS or not (send it in clear text only on a
            trusted network). Never shown in ``repr``.
        retry: How gRPC retries calls that fail with a retryable code
            (UNAVAILABLE, RESOURCE_EXHAUSTED and CANCELLED by default, up
            to 5 attempts, honouring the server's pushback delay); None for
            no retries.
        keepalive_seconds: Interval of HTTP/2 keepalive pings, also on an idle
            connection, so a dead connection is noticed and idle proxies keep
            it open; None for no pings. bertserve servers accept pings every
            10 s or more.
        options: gRPC channel options, as for ``grpc.insecure_channel``; they
            win over the options the settings above make, e.g. a
            ``grpc.service_config`` of your own replaces the retry and
            balancing config.
        on_timings: Called with a :class:`ServerTimings` after each
            successful call that ran rows through the encoder: where the
            server spent its time (total, tokenization, queue, inference, in
            ms), e.g. to feed your own metrics. A callback that raises is
            logged and does not fail the call.

    Raises:
        ValueError: Contradictory options, e.g. ``credentials`` with
            ``root_certificates``, or ``channel`` with TLS options.
        UnavailableError: A host name of several targets does not resolve.
        OSError: A PEM file cannot be read.

    Example::

        with BertServeClient("localhost:50051") as client:
            client.wait_until_ready()
            print(client.fill_mask("Paris is the [MASK] of France.").masks[0].predictions[0].token)
    """

    _open_at_init = True

    def _open_channel(self, plan: ChannelPlan) -> grpc.Channel:
        return plan.open()

    def __enter__(self) -> BertServeClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the channel this client opened (a channel passed in stays open)."""
        if self._owns_channel and self._channel is not None:
            self._channel.close()

    def _invoke(self, call: Call[T]) -> T:
        try:
            if self._on_timings is None:
                response = self._send(call)
            else:
                response, finished = self._send(call, with_call=True)
                report_timings(self._on_timings, finished.trailing_metadata())
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return call.prepared.convert(response)

    fill_mask = _blocking(api.fill_mask)
    next_sentence = _blocking(api.next_sentence)
    sentiment = _blocking(api.sentiment)
    answer = _blocking(api.answer)
    server_info = _blocking(api.server_info)
    list_heads = _blocking(api.list_heads)
    get_head = _blocking(api.get_head)
    predict = _blocking(api.predict)
    analyze = _blocking(api.analyze)

    def predict_stream(
        self, inputs: Iterable[StreamItem], *, timeout: Timeout = USE_CLIENT_DEFAULT
    ) -> Iterator[StreamResult]:
        retry = StreamRetry(self._retry, rq.resolve_timeout(timeout, self.timeout))
        feeder = StreamFeeder(stream_requests(inputs), StreamFeed(retry))
        stub = self._open().inference
        yield from resend_stream(
            feeder, lambda requests, remaining: stub.PredictStream(requests, timeout=remaining, metadata=self._metadata)
        )

    predict_stream.__doc__ = PREDICT_STREAM_DOC.format(iterable="a list, a generator")

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Block until the server's grpc.health.v1 status is SERVING (its encoder is loaded).

        Raises:
            UnavailableError: The server was not SERVING within ``timeout`` seconds.
        """
        self._open()
        assert self._channel is not None
        # No (de)serialisers: the hand-encoded health messages go as raw bytes.
        check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(rq.HEALTH_CHECK_METHOD)
        poll = HealthPoll(self.target, timeout)
        for check_timeout in poll.check_timeouts():
            try:
                response = check(
                    rq.HEALTH_CHECK_REQUEST, timeout=check_timeout, metadata=self._metadata, wait_for_ready=True
                )
            except grpc.RpcError as err:
                poll.failed(err)
            else:
                if poll.serving(response):
                    return
            time.sleep(poll.pause())
        raise poll.error() from poll.last_error
