"""The `Head` contract: what a task head plugin implements.

A head turns one task input into one or more encoder rows (`preprocess`),
computes its outputs from the shared encoder's hidden states for its rows of
a mixed batch (`forward`, on the inference thread), and assembles the task
output (`postprocess`). Heads never run the encoder themselves.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import torch

if TYPE_CHECKING:
    from .config import ServerConfig
    from .encoder import SharedEncoder

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
    """

    sequence_output: torch.Tensor
    pooled_output: torch.Tensor | None
    attention_mask: torch.Tensor


@dataclass(frozen=True)
class HeadLoadContext:
    """What `Head.load` may use: the shared encoder, its head file, the config."""

    encoder: SharedEncoder
    head_file: Path | None
    config: ServerConfig


@dataclass
class HeadDescription:
    """What a loaded head reports about itself in ListHeads."""

    source: str
    labels: tuple[str, ...] = field(default_factory=tuple)


class Head(ABC, Generic[InputT, OutputT]):
    """Base class of every task head.

    Subclasses set `name` (unique on the server), `task` (which typed service
    reaches it, e.g. ``"sentiment"``) and `description`, and implement the four
    methods below. `load` runs once at start-up; `preprocess` and
    `postprocess` run on the event loop for each request; `forward` runs on
    the inference thread for the head's rows of every batch.
    """

    name: str = ""
    task: str = ""
    description: str = ""

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
