"""The blocking bertserve client."""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar, overload

import grpc

from . import _requests as rq
from ._channel import (
    DEFAULT_KEEPALIVE_S,
    DEFAULT_RETRY,
    PemSource,
    RetryPolicy,
    bearer_metadata,
    check_no_channel_options,
    display_target,
    plan_channel,
)
from ._requests import USE_CLIENT_DEFAULT, Timeout
from .errors import error_from_rpc
from .results import AnswerResult, FillMaskResult, HeadInfo, NextSentenceResult, SentimentResult, ServerInfo

__all__ = ["BertServeClient"]

T = TypeVar("T")


class BertServeClient:
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

    def __init__(
        self,
        target: str | Sequence[str] = "localhost:50051",
        *,
        timeout: float | None = 30.0,
        channel: grpc.Channel | None = None,
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
    ) -> None:
        self.target = display_target(target)
        self.timeout = timeout
        self._metadata = bearer_metadata(token)
        self._owns_channel = channel is None
        if channel is None:
            channel = plan_channel(
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
            ).open()
        else:
            check_no_channel_options(
                credentials, tls, root_certificates, client_certificate, client_key, server_name, options
            )
        self._channel = channel
        self._stubs = rq.Stubs(channel)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.target!r}, timeout={self.timeout!r})"

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
        if self._owns_channel:
            self._channel.close()

    def _invoke(self, method: Callable[..., Any], prepared: rq.Prepared[T], timeout: Timeout) -> T:
        try:
            response = method(
                prepared.request,
                timeout=rq.resolve_timeout(timeout, self.timeout),
                metadata=self._metadata,
            )
        except grpc.RpcError as err:
            raise error_from_rpc(err) from err
        return prepared.convert(response)

    @overload
    def fill_mask(  # type: ignore[overload-overlap]  # a str is a Sequence[str] too
        self,
        text_or_texts: str,
        *,
        top_k: int = 5,
        targets: Sequence[str] | None = None,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> FillMaskResult: ...

    @overload
    def fill_mask(
        self,
        text_or_texts: Sequence[str],
        *,
        top_k: int = 5,
        targets: Sequence[str] | None = None,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[FillMaskResult]: ...

    def fill_mask(
        self,
        text_or_texts: str | Sequence[str],
        *,
        top_k: int = 5,
        targets: Sequence[str] | None = None,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> FillMaskResult | list[FillMaskResult]:
        """Predict the tokens behind the mask tokens (``ServerInfo.mask_token``) of text(s).

        Args:
            text_or_texts: A text, or a sequence of texts, each with at least one mask.
            top_k: Candidates per mask.
            targets: Optional candidate words; only these are scored.
            truncate: Truncate over-long texts instead of rejecting them.
            head: Head name; empty selects the built-in "fill-mask" head.
            timeout: Deadline of this call in seconds, overriding the client's.
        """
        prepared = rq.prepare_fill_mask(text_or_texts, top_k=top_k, targets=targets, truncate=truncate, head=head)
        return self._invoke(self._stubs.fill_mask.FillMask, prepared, timeout)

    @overload
    def next_sentence(
        self,
        first: str,
        second: str,
        *,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> NextSentenceResult: ...

    @overload
    def next_sentence(
        self,
        pairs: Sequence[tuple[str, str]],
        /,
        *,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[NextSentenceResult]: ...

    def next_sentence(
        self,
        first: str | Sequence[tuple[str, str]],
        second: str | None = None,
        *,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> NextSentenceResult | list[NextSentenceResult]:
        """Score whether ``second`` follows ``first``, or each of a sequence of (first, second) pairs.

        Args:
            first: The first sentence, or a sequence of (first, second) pairs.
            second: The candidate next sentence (omit when passing pairs).
            truncate: Truncate over-long pairs instead of rejecting them.
            head: Head name; empty selects the built-in "next-sentence" head.
            timeout: Deadline of this call in seconds, overriding the client's.
        """
        prepared = rq.prepare_next_sentence(first, second, truncate=truncate, head=head)
        return self._invoke(self._stubs.next_sentence.PredictNextSentence, prepared, timeout)

    @overload
    def sentiment(  # type: ignore[overload-overlap]  # a str is a Sequence[str] too
        self,
        text_or_texts: str,
        *,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> SentimentResult: ...

    @overload
    def sentiment(
        self,
        text_or_texts: Sequence[str],
        *,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[SentimentResult]: ...

    def sentiment(
        self,
        text_or_texts: str | Sequence[str],
        *,
        truncate: bool = False,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> SentimentResult | list[SentimentResult]:
        """Classify the sentiment of a text or of each of a sequence of texts.

        Args:
            text_or_texts: A text or a sequence of texts.
            truncate: Truncate over-long texts instead of rejecting them.
            head: Head name; empty selects the built-in "sentiment" head.
            timeout: Deadline of this call in seconds, overriding the client's.
        """
        prepared = rq.prepare_sentiment(text_or_texts, truncate=truncate, head=head)
        return self._invoke(self._stubs.sentiment.ClassifySentiment, prepared, timeout)

    @overload
    def answer(
        self,
        question: str,
        context: str,
        *,
        top_k: int = 1,
        max_answer_length: int = 15,
        doc_stride: int = 128,
        allow_no_answer: bool | None = None,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> AnswerResult: ...

    @overload
    def answer(
        self,
        pairs: Sequence[tuple[str, str]],
        /,
        *,
        top_k: int = 1,
        max_answer_length: int = 15,
        doc_stride: int = 128,
        allow_no_answer: bool | None = None,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[AnswerResult]: ...

    def answer(
        self,
        question: str | Sequence[tuple[str, str]],
        context: str | None = None,
        *,
        top_k: int = 1,
        max_answer_length: int = 15,
        doc_stride: int = 128,
        allow_no_answer: bool | None = None,
        head: str = "",
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> AnswerResult | list[AnswerResult]:
        """Extract answer spans to a question from its context, or for each (question, context) pair.

        Args:
            question: The question, or a sequence of (question, context) pairs.
            context: The text to find the answer in (omit when passing pairs).
            top_k: Answers per question, best first.
            max_answer_length: Longest answer in tokens.
            doc_stride: Overlap in tokens between windows of a long context.
            allow_no_answer: True to allow a "no answer" result, False to never
                return one, None for the head's own setting.
            head: Head name; empty selects the built-in "question-answering" head.
            timeout: Deadline of this call in seconds, overriding the client's.
        """
        prepared = rq.prepare_answer(
            question,
            context,
            top_k=top_k,
            max_answer_length=max_answer_length,
            doc_stride=doc_stride,
            allow_no_answer=allow_no_answer,
            head=head,
        )
        return self._invoke(self._stubs.question_answering.AnswerQuestion, prepared, timeout)

    def server_info(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> ServerInfo:
        """Describe the shared encoder and the server."""
        return self._invoke(self._stubs.model.GetServerInfo, rq.prepare_server_info(), timeout)

    def list_heads(self, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> list[HeadInfo]:
        """List every registered head, loaded or not, in registration order."""
        return self._invoke(self._stubs.model.ListHeads, rq.prepare_list_heads(), timeout)

    def get_head(self, name: str, *, timeout: Timeout = USE_CLIENT_DEFAULT) -> HeadInfo:
        """Describe head ``name``, with its input and output JSON Schemas.

        Raises:
            NotFoundError: No head is registered under ``name``.
        """
        return self._invoke(self._stubs.model.GetHead, rq.prepare_get_head(name), timeout)

    def predict(
        self,
        head: str,
        input: Mapping[str, Any],
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> dict[str, Any]:
        """Run head ``head`` on one JSON-like input (``InferenceService.Predict``).

        Reaches every head, built-in or from a plugin; :meth:`get_head` gives
        the JSON Schemas of its input and output.

        Args:
            head: Head name (see :meth:`list_heads`).
            input: The input, e.g. ``{"text": "a great movie"}``; it must
                validate against the head's ``input_schema``.
            timeout: Deadline of this call in seconds, overriding the client's.

        Returns:
            The head's output as a plain dict, whole numbers as int (token
            ids, offsets).

        Raises:
            TypeError: ``input`` holds a value with no JSON form.
            ValueError: ``input`` holds a non-finite number or an int beyond 2**53.
        """
        return self._invoke(self._stubs.inference.Predict, rq.prepare_predict(head, input), timeout)

    @overload
    def analyze(  # type: ignore[overload-overlap]  # a str is a Sequence[str] too
        self,
        texts: str,
        heads: Sequence[str | tuple[str, Mapping[str, Any]]],
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> dict[str, dict[str, Any]]: ...

    @overload
    def analyze(
        self,
        texts: Sequence[str | tuple[str, str]],
        heads: Sequence[str | tuple[str, Mapping[str, Any]]],
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> list[dict[str, dict[str, Any]]]: ...

    def analyze(
        self,
        texts: str | Sequence[str | tuple[str, str]],
        heads: Sequence[str | tuple[str, Mapping[str, Any]]],
        *,
        timeout: Timeout = USE_CLIENT_DEFAULT,
    ) -> dict[str, dict[str, Any]] | list[dict[str, dict[str, Any]]]:
        """Run several heads on the same text(s), one encoder pass per text (``InferenceService.Analyze``).

        Args:
            texts: A text, or a sequence of texts and (text, text_pair) pairs
                (pair heads such as "next-sentence" read pairs; the others
                single texts). For one pair, pass ``[(text, text_pair)]``.
            heads: Head names, or (name, options) pairs whose options join each
                input, e.g. ``["sentiment", ("fill-mask", {"top_k": 3})]``.
                The heads' ``text_fields`` are filled from ``texts``. A head
                may appear once only.
            timeout: Deadline of this call in seconds, overriding the client's.

        Returns:
            For each input, a dict mapping each head name to its output (as
            :meth:`predict` returns it), in the order of ``heads``; one dict
            for a str, a list in input order for a sequence.

        Raises:
            TypeError: An argument or option value has the wrong type.
            ValueError: A head is listed twice, or an option holds a number
                with no exact JSON form.
        """
        return self._invoke(self._stubs.inference.Analyze, rq.prepare_analyze(texts, heads), timeout)

    def wait_until_ready(self, timeout: float = 60.0) -> None:
        """Block until the server's grpc.health.v1 status is SERVING (its encoder is loaded).

        Raises:
            UnavailableError: The server was not SERVING within ``timeout`` seconds.
        """
        # No (de)serialisers: the hand-encoded health messages go as raw bytes.
        check: grpc.UnaryUnaryMultiCallable[bytes, bytes] = self._channel.unary_unary(rq.HEALTH_CHECK_METHOD)
        deadline = time.monotonic() + timeout
        last_error: grpc.RpcError | None = None
        while (remaining := deadline - time.monotonic()) > 0:
            try:
                response = check(
                    rq.HEALTH_CHECK_REQUEST,
                    timeout=min(remaining, rq.HEALTH_MAX_CHECK_S),
                    metadata=self._metadata,
                    wait_for_ready=True,
                )
            except grpc.RpcError as err:
                last_error = err
            else:
                if response == rq.HEALTH_SERVING_RESPONSE:
                    return
                last_error = None
            time.sleep(max(0.0, min(rq.HEALTH_POLL_INTERVAL_S, deadline - time.monotonic())))
        raise rq.not_ready_error(self.target, timeout, last_error) from last_error
