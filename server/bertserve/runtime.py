"""The serving runtime: encoder, heads and batcher, and how a request runs."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from .batcher import Batcher
from .config import ServerConfig
from .encoder import SharedEncoder
from .errors import FieldViolation, InputError, InvalidArgument
from .heads import EncodedRow, Head
from .plugin_manager import HeadRegistry

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass
class Runtime:
    """Everything a request handler needs, built once at start-up."""

    config: ServerConfig
    encoder: SharedEncoder
    registry: HeadRegistry
    batcher: Batcher

    def head(self, name: str, *, task: str) -> Head[Any, Any]:
        """The loaded head for a request's `head` field (empty: the task's default)."""
        return self.registry.get(name or task, task=task)

    async def run(
        self,
        head: Head[InputT, OutputT],
        items: Sequence[InputT],
        context: grpc.aio.ServicerContext,
        *,
        field_of: Callable[[int], str],
    ) -> list[OutputT]:
        """Preprocess every item, run all their rows through the batcher, postprocess.

        `field_of(i)` names item i on the wire (e.g. ``texts[3]``) so input
        errors point at the right field. All bad items are reported at once.
        """
        if not items:
            raise InvalidArgument(
                f"the request holds no inputs; send between 1 and {self.config.max_inputs_per_request}",
                field_violations=[FieldViolation(field_of(0).split("[")[0], "must not be empty")],
            )
        if len(items) > self.config.max_inputs_per_request:
            raise InvalidArgument(
                f"the request holds {len(items)} inputs; at most {self.config.max_inputs_per_request} are allowed "
                "per call, split it",
                field_violations=[FieldViolation(field_of(0).split("[")[0], "too many inputs")],
            )
        rows_per_item: list[list[EncodedRow]] = []
        violations: list[FieldViolation] = []
        for index, item in enumerate(items):
            try:
                rows_per_item.append(head.preprocess(item))
            except InputError as error:
                violations.append(FieldViolation(_field_path(field_of(index), error.field), error.description))
        if violations:
            summary = "; ".join(f"{v.field}: {v.description}" for v in violations[:3])
            more = f" (and {len(violations) - 3} more)" if len(violations) > 3 else ""
            raise InvalidArgument(f"invalid input: {summary}{more}", field_violations=violations)
        flat_rows = [row for rows in rows_per_item for row in rows]
        results = await self.batcher.submit(head, flat_rows, timeout=context.time_remaining())
        outputs = []
        offset = 0
        for item, rows in zip(items, rows_per_item):
            outputs.append(head.postprocess(item, rows, results[offset : offset + len(rows)]))
            offset += len(rows)
        return outputs


def _field_path(item_path: str, sub_field: str | None) -> str:
    """Join an item's wire path with a head's sub-field name.

    Items that are plain strings on the wire (``texts[2]``) have no sub-fields:
    the head's name for the text is dropped; request-wide options such as
    ``top_k`` are reported by their own name.
    """
    if sub_field is None or sub_field == "text":
        return item_path
    if sub_field in _REQUEST_OPTIONS:
        return sub_field
    return f"{item_path}.{sub_field}"


_REQUEST_OPTIONS = {"top_k", "targets", "max_answer_length", "doc_stride"}
