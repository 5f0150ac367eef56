"""Server configuration: one immutable object built by the CLI or by tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class BatchingConfig:
    """How the shared queue forms encoder batches.

    A batch closes when it holds `max_batch_size` rows, when its padded size
    would pass `max_batch_tokens`, or when the oldest row has waited
    `max_delay_ms`. With the default delay of 0 a row that finds the encoder
    idle starts at once; rows arriving during a forward form the next batch.

    A row joins a batch only if the padding it adds costs less than the fixed
    cost of a separate forward, `forward_cost_tokens` (that cost expressed in
    tokens). None measures it on the encoder at start-up: about 20 tokens on
    a 2-core CPU, where padding is as dear as real work; thousands on a GPU.
    """

    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    max_delay_ms: float = 0.0
    max_queue_rows: int = 4096
    forward_cost_tokens: float | None = None

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be at least 1")
        if self.max_delay_ms < 0:
            raise ValueError("max_delay_ms must not be negative")
        if self.max_queue_rows < 1:
            raise ValueError("max_queue_rows must be at least 1")
        if self.forward_cost_tokens is not None and self.forward_cost_tokens < 0:
            raise ValueError("forward_cost_tokens must not be negative")


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start.

    `model` is a local folder or a hub id; None selects the offline default
    encoder. `head_files` maps a head name (e.g. ``"sentiment"``) to its head
    file. `device` is ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; `dtype` is
    ``"auto"`` (float32 on CPU, bfloat16 or float16 on CUDA), ``"float32"``,
    ``"float16"`` or ``"bfloat16"``. `plugins_allow` (None: all) and
    `plugins_deny` hold plugin entry-point or distribution names.
    `worker_threads` run the heads' pre- and postprocessing.
    """

    model: str | None = None
    head_files: dict[str, Path] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_sequence_length: int | None = None
    max_inputs_per_request: int = 1024
    worker_threads: int = 4
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    plugin_entry_point_group: str = "bertserve.heads"
    plugins_allow: tuple[str, ...] | None = None
    plugins_deny: tuple[str, ...] = ()

    def with_environment(self, environ: Mapping[str, str]) -> ServerConfig:
        """This config with the plugin allow/deny lists of the environment added.

        ``BERTSERVE_PLUGINS_ALLOW`` and ``BERTSERVE_PLUGINS_DENY`` are
        comma-separated entry-point or distribution names.
        """
        allow = _names(environ.get("BERTSERVE_PLUGINS_ALLOW", ""))
        deny = _names(environ.get("BERTSERVE_PLUGINS_DENY", ""))
        return replace(
            self,
            plugins_allow=(*(self.plugins_allow or ()), *allow) if allow or self.plugins_allow is not None else None,
            plugins_deny=(*self.plugins_deny, *deny),
        )


def _names(value: str) -> tuple[str, ...]:
    return tuple(name.strip() for name in value.split(",") if name.strip())
