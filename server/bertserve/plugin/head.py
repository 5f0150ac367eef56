"""The `Head` contract: what a task head plugin implements.

A head turns one task input into one or more encoder rows (`preprocess`),
computes its outputs from the shared encoder's hidden states for its rows of
a mixed batch (`forward`, on the inference thread), and assembles the task
output (`postprocess`). While serving, heads never run the encoder
themselves; at load time they may (`EncoderView.encode_texts`).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch

from bertserve.plugin.schema import from_json, json_schema, to_json

if TYPE_CHECKING:
    from bertserve.plugin.encoder import EncoderView
    from bertserve.plugin.settings import PluginSettings

WARMUP_TEXT = "The fox jumped over the dog."

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass
class EncodedRow:
    """One encoder input row: token ids, segment ids and head-private data."""

    input_ids: list[int]
    token_type_ids: list[int]
    data: Any = None

    def __len__(self) -> int:
        return len(self.input_ids)


@dataclass(frozen=True)
class EncoderOutputs:
    """The shared encoder's outputs for one head's rows of a batch.

    Row i of each tensor belongs to the i-th row passed to `Head.forward`.
    Rows are right-padded to a common length; `attention_mask` marks real
    tokens. `pooled_output` is None when the checkpoint has no pooler weights.
    `hidden_states` (the embedding output, then every layer's output) is
    given only to heads whose `needs_hidden_states` is true.
    """

    sequence_output: torch.Tensor
    pooled_output: torch.Tensor | None
    attention_mask: torch.Tensor
    hidden_states: tuple[torch.Tensor, ...] | None = None


@dataclass(frozen=True)
class HeadLoadContext:
    """What `Head.load` may use: a read-only view of the shared encoder, the head's file, the settings.

    `head_file` is the file the operator gave with ``--head-file NAME=PATH``
    (None when none was given).
    """

    encoder: EncoderView
    head_file: Path | None
    config: PluginSettings


@dataclass
class HeadDescription:
    """What a loaded head reports about itself in ListHeads."""

    source: str
    labels: tuple[str, ...] = field(default_factory=tuple)


class Head(ABC, Generic[InputT, OutputT]):
    """Base class of every task head.

    Subclasses set `name` (unique on the server), `task` (which typed service
    reaches it, e.g. ``"sentiment"``), `description`, and `input_type` and
    `output_type`: frozen dataclasses whose JSON Schemas the generic
    `Predict` and `Analyze` RPCs publish and validate against. A head that
    can read a plain text (or text pair) names the input fields that take it
    in `text_fields`, which lets `Analyze` run it on a shared encoder pass.

    A head that reads layers below the top sets `needs_hidden_states` (at
    latest in `load`) to get every layer's output in `EncoderOutputs`.

    `load` runs once at start-up; `preprocess` and `postprocess` run for each
    request on a worker thread, or on the event loop when they measured
    cheaper than a thread hop (so they must not block on I/O); `forward`
    runs on the inference thread for the head's rows of every batch.
    """

    name: str = ""
    task: str = ""
    description: str = ""
    input_type: type[InputT]
    output_type: type[OutputT]
    text_fields: tuple[str, ...] = ()
    needs_hidden_states: bool = False

    def input_schema(self) -> dict[str, Any]:
        """JSON Schema of one input, derived from `input_type`."""
        return json_schema(self.input_type)

    def output_schema(self) -> dict[str, Any]:
        """JSON Schema of one output, derived from `output_type`."""
        return json_schema(self.output_type)

    def warmup_input(self) -> InputT | None:
        """An input the server runs once at start-up, before it reports SERVING.

        The default puts a sample sentence in every `text_fields` field, or
        returns None (no warm-up) for a head without text fields. Override it
        when the sample does not fit, e.g. a head that needs a marker token.
        """
        if not self.text_fields:
            return None
        return self.parse_input({name: WARMUP_TEXT for name in self.text_fields})

    def modules(self) -> list[torch.nn.Module]:
        """The torch modules holding this head's weights, for the server's weights-memory metric.

        The default finds the modules among the head's attributes; override it
        when the head keeps them elsewhere (in a list, a dict).
        """
        return [value for value in vars(self).values() if isinstance(value, torch.nn.Module)]

    def parse_input(self, data: Mapping[str, Any]) -> InputT:
        """An `input_type` from JSON data that passed `input_schema()`."""
        return from_json(self.input_type, data)

    def render_output(self, output: OutputT) -> dict[str, Any]:
        """JSON data for one output."""
        rendered = to_json(output)
        assert isinstance(rendered, dict)
        return rendered

    @abstractmethod
    def load(self, context: HeadLoadContext) -> HeadDescription:
        """Build the head's module on `context.encoder` and load its weights.

        Raise `HeadUnavailable` with a reason the operator can act on when the
        weights are missing or do not fit this encoder.
        """

    @abstractmethod
    def preprocess(self, item: InputT) -> list[EncodedRow]:
        """Validate and tokenize one input into encoder rows.

        Raise `InputError` for bad input; its message says what is allowed.
        """

    @abstractmethod
    def forward(self, outputs: EncoderOutputs, rows: Sequence[EncodedRow]) -> list[Any]:
        """Compute per-row results (plain Python or CPU tensors) for a batch."""

    @abstractmethod
    def postprocess(self, item: InputT, rows: Sequence[EncodedRow], results: Sequence[Any]) -> OutputT:
        """Turn the results of `item`'s rows into its task output."""
