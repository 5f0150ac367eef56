"""The serving runtime: encoder, heads and batcher, and how a request runs."""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, TypeVar

import grpc

from bertserve.config import ServerConfig
from bertserve.model.encoder import SharedEncoder
from bertserve.model.registry import HeadRegistry, HeadState
from bertserve.plugin.errors import (
    BertServeError,
    DeadlineExceeded,
    FieldViolation,
    HeadFailed,
    InputError,
    InvalidArgument,
)
from bertserve.plugin.head import EncodedRow, Head
from bertserve.plugin.schema import SchemaValidator
from bertserve.plugin.service import InputFields
from bertserve.plugin.tasks import complete_output
from bertserve.runtime.analyze import AnalyzeFields, AnalyzePlan, Guard, analyze_items
from bertserve.runtime.batcher import Batcher
from bertserve.runtime.offload import Offloader
from bertserve.runtime.request_context import current_request

log = logging.getLogger(__name__)

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")
T = TypeVar("T")


@dataclass
class Runtime:
    """Everything a request handler needs, built once at start-up.

    Pre- and postprocessing run on a pool of worker threads, off the event
    loop, so one slow head does not hold up the others (each thread has its
    own tokenizer copy: `SharedEncoder.tokenizer`); work measured to cost
    less than the hop to a thread and back (one sentence) runs inline on the
    event loop instead (`offload.Offloader`).
    """

    config: ServerConfig
    encoder: SharedEncoder
    registry: HeadRegistry
    batcher: Batcher
    worker_threads: int = 1
    serving: Callable[[], bool] = lambda: True  # False while draining or while a forward is stuck
    worker: ThreadPoolExecutor = field(init=False)
    offloader: Offloader = field(init=False)
    _validators: dict[str, SchemaValidator] = field(init=False, default_factory=dict)

    def __post_init__(self) -> None:
        self.worker = ThreadPoolExecutor(max_workers=self.worker_threads, thread_name_prefix="bertserve-prepost")
        self.offloader = Offloader(self.worker)

    def _parse_input(self, head: Head[Any, Any], data: Mapping[str, Any], *, prefix: str) -> Any:
        """`parse_head_input` with the head's input schema compiled once per server, not per call."""
        validator = self._validators.get(head.name)
        if validator is None:
            schema = self.registry.record(head.name).input_schema or head.input_schema()
            validator = self._validators[head.name] = SchemaValidator(schema)
        return self._guarded(
            head, "parse_input", lambda: parse_head_input(head, data, prefix=prefix, validator=validator)
        )

    async def close(self) -> None:
        """Stop the batcher and the worker thread."""
        await self.batcher.stop()
        self.worker.shutdown(wait=True)

    def head(self, name: str, *, task: str) -> Head[Any, Any]:
        """The loaded head for a request's `head` field (empty: the task's default)."""
        return _noted(self.registry.get(name or task, task=task))

    async def run(
        self,
        head: Head[InputT, OutputT],
        items: Sequence[InputT],
        context: grpc.aio.ServicerContext | None,
        *,
        fields: InputFields | None = None,
        field_of: Callable[[int], str] | None = None,
    ) -> list[OutputT]:
        """Preprocess every item, run all their rows through the batcher, postprocess.

        `fields` says where the items sit in the request (see `InputFields`),
        so input errors point at the right field; all bad items are reported
        at once. `field_of` is the plugin API 1.0 form of the same. Pre- and
        postprocessing run on worker threads or inline (`offload`).
        """
        fields = fields or (_FieldOf(field_of) if field_of is not None else InputFields("inputs"))
        self._check_count(len(items), fields)
        _check_deadline(context, "before preprocessing")
        started = time.perf_counter()
        rows_per_item = await self.offloader.run(
            ("preprocess", head.name), text_size(items), self._preprocess_all, head, items, fields, self._guarded
        )
        _note_preprocess(started)
        flat_rows = [row for rows in rows_per_item for row in rows]
        self._check_tokens(sum(len(row) for row in flat_rows), fields.items)
        results = await self.batcher.submit(head, flat_rows, timeout=_time_left(context))
        tokens = sum(len(row) for row in flat_rows)
        return await self.offloader.run(
            ("postprocess", head.name),
            tokens,
            self._postprocess_all,
            head,
            items,
            rows_per_item,
            results,
            self._guarded,
        )

    async def predict(
        self, name: str, data: Mapping[str, Any], context: grpc.aio.ServicerContext | None, *, fields: InputFields
    ) -> dict[str, Any]:
        """Validate JSON `data` against head `name`'s input schema, run it, render the output.

        `fields` says where the input sits in the request (one input: `single`).
        """
        head = _noted(self.registry.get(name))
        item = self._parse_input(head, data, prefix=fields.items)
        (output,) = await self.run(head, [item], context, fields=fields)
        rendered: dict[str, Any] = self._guarded(head, "render_output", head.render_output, output)
        return rendered

    async def analyze(
        self,
        texts: Sequence[tuple[str, str | None]],
        requests: Sequence[tuple[str, Mapping[str, Any]]],
        context: grpc.aio.ServicerContext | None,
        *,
        fields: AnalyzeFields,
    ) -> list[list[dict[str, Any] | BertServeError]]:
        """Run several heads on the same texts from ONE encoder pass per text.

        `texts` are (text, text_pair or None); `requests` are (head name,
        options); `fields` says where the request keeps them. Returns, per
        text, each head's rendered output in request order, or the error of
        that head on that text (see `AnalyzePlan`). Heads whose rows for a
        text tokenize alike share one encoder row; a head that tokenizes
        differently gets its own row in the same batch rather than a wrong answer.
        """
        self._check_count(len(texts), InputFields(fields.inputs))
        if not requests:
            raise InvalidArgument(
                f"the request names no heads; list at least one in {fields.heads}",
                field_violations=[FieldViolation(fields.heads, "must not be empty")],
            )
        heads = [_noted(self.registry.get(name)) for name, _ in requests]
        items = [
            analyze_items(head, index, options, texts, fields, self._parse_input)
            for index, (head, (_, options)) in enumerate(zip(heads, requests))
        ]
        plan = AnalyzePlan(heads, items, fields)
        _check_deadline(context, "before preprocessing")
        size = sum(text_size(items) for items in plan.items)
        started = time.perf_counter()
        await self.offloader.run(("analyze-preprocess",), size, plan.preprocess, self._guarded)
        _note_preprocess(started)
        groups = plan.groups()
        self._check_tokens(sum(len(group[0][1]) for group in groups), fields.inputs)
        if groups:
            plan.take_results(groups, await self.batcher.submit_shared(groups, timeout=_time_left(context)))
        return await self.offloader.run(("analyze-postprocess",), plan.size(), plan.outputs, self._guarded)

    def _guarded(self, head: Head[Any, Any], stage: str, function: Callable[..., T], *args: Any) -> T:
        """`function(*args)`, a method of `head`; an unexpected exception becomes INTERNAL naming head and plugin.

        `InputError` and the server's own errors pass through: they already
        say what the client did wrong.
        """
        try:
            return function(*args)
        except (InputError, BertServeError):
            raise
        except Exception as error:
            origin = self.registry.origin(head)
            log.error("%s failed in %s", origin, stage, exc_info=True)
            raise HeadFailed(
                f"{origin} failed in {stage}: {error!r}; see the server log",
                metadata={"head": head.name, "stage": stage},
            ) from error

    def _check_tokens(self, tokens: int, field: str) -> None:
        limit = self.config.max_tokens_per_request
        if tokens > limit:
            raise InvalidArgument(
                f"the request needs {tokens} tokens after tokenization; at most {limit} are allowed per call, split it",
                reason="REQUEST_TOO_LARGE",
                metadata={"max_tokens_per_request": str(limit), "tokens": str(tokens)},
                field_violations=[FieldViolation(field, f"{tokens} tokens, more than {limit}")],
            )

    async def warm_up(self) -> list[str]:
        """Run every loaded head once on its warm-up input; returns the heads that ran.

        A head whose warm-up fails is marked FAILED with the reason: it is not
        served, and health reports the services that need it NOT_SERVING.
        """
        warmed = []
        for record in self.registry.records():
            if record.state is not HeadState.LOADED:
                continue
            head = record.head
            try:
                item = self._guarded(head, "warmup_input", head.warmup_input)
                if item is None:
                    continue
                await self.run(head, [item], None, fields=WARMUP_FIELDS)
            except Exception as error:
                message = error.message if isinstance(error, BertServeError) else repr(error)
                record.fail(f"warm-up failed: {message}")
                log.error("%s failed its warm-up and is not served: %s", record.origin, message)
                continue
            warmed.append(head.name)
        return warmed

    def _check_count(self, count: int, fields: InputFields) -> None:
        limit = self.config.max_inputs_per_request
        name = fields.items
        if count == 0:
            raise InvalidArgument(
                f"the request holds no inputs; send between 1 and {limit}",
                field_violations=[FieldViolation(name, "must not be empty")],
            )
        if count > limit:
            raise InvalidArgument(
                f"the request holds {count} inputs; at most {limit} are allowed per call, split it",
                field_violations=[FieldViolation(name, "too many inputs")],
            )

    @staticmethod
    def _preprocess_all(
        head: Head[Any, Any], items: Sequence[Any], fields: InputFields, guard: Guard
    ) -> list[list[EncodedRow]]:
        rows_per_item: list[list[EncodedRow]] = []
        violations: list[FieldViolation] = []
        for index, item in enumerate(items):
            try:
                rows_per_item.append(guard(head, "preprocess", head.preprocess, item))
            except InputError as error:
                violations.append(FieldViolation(fields.item(index, error.field), error.description))
        _raise_for(violations)
        return rows_per_item

    @staticmethod
    def _postprocess_all(
        head: Head[Any, Any],
        items: Sequence[Any],
        rows_per_item: Sequence[Sequence[EncodedRow]],
        results: Sequence[Any],
        guard: Guard,
    ) -> list[Any]:
        outputs = []
        offset = 0
        for item, rows in zip(items, rows_per_item):
            output = guard(head, "postprocess", head.postprocess, item, rows, results[offset : offset + len(rows)])
            outputs.append(complete_output(item, output))
            offset += len(rows)
        return outputs


def parse_head_input(
    head: Head[Any, Any], data: Mapping[str, Any], *, prefix: str, validator: SchemaValidator | None = None
) -> Any:
    """Validate JSON `data` against the head's input schema and build its input.

    Every violation is reported at once as INVALID_ARGUMENT with field paths
    under `prefix` (e.g. ``input.top_k``). `validator` is the head's input
    schema already compiled (built here when None).
    """
    validator = validator or SchemaValidator(head.input_schema())
    violations = validator.violations(dict(data), prefix=prefix)
    if violations:
        _raise_for([FieldViolation(field, description) for field, description in violations], head=head.name)
    return head.parse_input(data)


def _raise_for(violations: Sequence[FieldViolation], head: str | None = None) -> None:
    if not violations:
        return
    summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:3])
    more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
    subject = f"invalid input for head {head!r}" if head else "invalid input"
    raise InvalidArgument(f"{subject}: {summary}{more}", field_violations=violations)


class _FieldOf(InputFields):
    """`InputFields` from a plugin API 1.0 ``field_of`` callable (the path of item i)."""

    def __init__(self, field_of: Callable[[int], str]) -> None:
        super().__init__(items=field_of(0).split("[")[0])
        object.__setattr__(self, "_field_of", field_of)

    def item(self, index: int, sub_field: str | None = None) -> str:
        path: str = self._field_of(index)  # type: ignore[attr-defined]
        return path if sub_field is None else f"{path}.{sub_field}"


WARMUP_FIELDS = InputFields("warmup", single=True)


def _noted(head: Head[Any, Any]) -> Head[Any, Any]:
    """`head`, recorded as used by the current request (for its log line and metrics)."""
    request = current_request()
    if request is not None:
        request.add_head(head.name)
    return head


def _note_preprocess(started: float) -> None:
    """Add the preprocessing that began at `started` to the current request's timings."""
    request = current_request()
    if request is not None:
        request.timings.preprocess += time.perf_counter() - started


def _check_deadline(context: grpc.aio.ServicerContext | None, stage: str) -> None:
    left = _time_left(context)
    if left is not None and left <= 0:
        raise DeadlineExceeded(f"the deadline passed {stage}")


def _time_left(context: grpc.aio.ServicerContext | None) -> float | None:
    """Seconds to the RPC's deadline; None without a deadline or an RPC (in-process calls)."""
    return context.time_remaining() if context is not None else None


def text_size(items: Sequence[Any]) -> int:
    """Characters of text in task inputs (their string fields, also inside tuples): their preprocessing size."""
    return sum(_text_size(item) for item in items)


def _text_size(value: Any) -> int:
    if isinstance(value, str):
        return len(value)
    if isinstance(value, (tuple, list)):
        return sum(_text_size(part) for part in value)
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return sum(_text_size(getattr(value, f.name)) for f in dataclasses.fields(value))
    if isinstance(value, Mapping):
        return sum(_text_size(part) for part in value.values())
    return 0
