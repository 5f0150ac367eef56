"""Server configuration: one immutable object built by the CLI or by tests."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

DEFAULT_PORT = 50051


@dataclass(frozen=True)
class BatchingConfig:
    """How the shared queue forms encoder batches.

    A batch takes waiting rows in arrival order and closes when it holds
    `max_batch_size` rows, when the next row would take it past
    `max_batch_tokens` tokens (real tokens: the encoder computes no padding),
    or when the oldest row has waited `max_delay_ms`. With the default delay
    of 0 a row that finds the encoder idle starts at once; rows arriving
    during a forward form the next batch.
    """

    max_batch_size: int = 32
    max_batch_tokens: int = 16384
    max_delay_ms: float = 0.0
    max_queue_rows: int = 4096

    def __post_init__(self) -> None:
        if self.max_batch_size < 1:
            raise ValueError("max_batch_size must be at least 1")
        if self.max_batch_tokens < 1:
            raise ValueError("max_batch_tokens must be at least 1")
        if self.max_delay_ms < 0:
            raise ValueError("max_delay_ms must not be negative")
        if self.max_queue_rows < 1:
            raise ValueError("max_queue_rows must be at least 1")


@dataclass(frozen=True)
class SecurityConfig:
    """Transport security and who may call.

    `tls_cert` and `tls_key` (PEM files) turn on TLS; `tls_client_ca` also
    requires every client to present a certificate signed by that CA (mutual
    TLS). Bearer tokens come from `tokens_file` (one per line: ``TOKEN [NAME
    [METHOD-PATTERN,...]]``) and from `tokens`; with any token configured,
    every RPC except health needs ``authorization: Bearer TOKEN`` metadata.
    Reflection needs a token too unless `public_reflection`; the metrics
    endpoint needs one only with `metrics_require_token`.
    """

    tls_cert: Path | None = None
    tls_key: Path | None = None
    tls_client_ca: Path | None = None
    tokens_file: Path | None = None
    tokens: tuple[str, ...] = field(default=(), repr=False)
    public_reflection: bool = False
    metrics_require_token: bool = False

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def auth(self) -> bool:
        return self.tokens_file is not None or bool(self.tokens)


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint: ``http://host:port/metrics``; `port` None turns it off, 0 picks one."""

    host: str = "127.0.0.1"
    port: int | None = None


@dataclass(frozen=True)
class LoggingConfig:
    """Log level and format (``plain`` or ``json``).

    Every request is logged at DEBUG with its request id, head, duration and
    status; failed requests are logged at WARNING (client errors) or ERROR
    (server errors) at any level.
    """

    level: str = "INFO"
    format: str = "plain"


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start.

    `model` is a local folder or a hub id; None selects the offline default
    encoder. `head_files` maps a head name (e.g. ``"sentiment"``) to its head
    file. `device` is ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; `dtype` is
    ``"auto"`` (float32 on CPU, bfloat16 or float16 on CUDA), ``"float32"``,
    ``"float16"``, ``"bfloat16"`` or ``"int8"`` (CPU only, never the default:
    the encoder layers' linear layers dynamically quantized to int8, float32
    activations; see `bertserve.quantize`). `plugins_allow` (None: all) and
    `plugins_deny` hold plugin entry-point or distribution names.
    `torch_threads` size torch's intra-op pool and `worker_threads` run the
    heads' larger pre- and postprocessing; None gives each one thread per
    usable CPU (see `threads`).

    Limits: a request may hold `max_inputs_per_request` inputs and
    `max_tokens_per_request` tokens after tokenization (INVALID_ARGUMENT
    beyond), and `max_message_bytes` on the wire (RESOURCE_EXHAUSTED beyond,
    from gRPC). At most `max_concurrent_requests` requests are in progress;
    beyond that, and beyond the batch queue's `max_queue_rows`, a request is
    refused at once with RESOURCE_EXHAUSTED and a retry delay. `warmup` runs
    every loaded head once before health turns SERVING; on shutdown accepted
    requests get `shutdown_grace_seconds` to finish.

    `max_connection_age_seconds` closes client connections (gracefully) after
    that age, so clients balancing over a DNS name look it up again and find
    new replicas. `health_port` opens a second, plaintext port that serves
    only grpc.health.v1, for probes that cannot speak TLS (the kubelet's).
    """

    model: str | None = None
    head_files: dict[str, Path] = field(default_factory=dict)
    device: str = "auto"
    dtype: str = "auto"
    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    max_sequence_length: int | None = None
    max_inputs_per_request: int = 1024
    max_tokens_per_request: int = 131072
    max_concurrent_requests: int = 1024
    max_message_bytes: int = 4 * 1024 * 1024
    torch_threads: int | None = None
    worker_threads: int | None = None
    warmup: bool = True
    shutdown_grace_seconds: float = 30.0
    keepalive_seconds: float = 60.0
    max_connection_age_seconds: float | None = None
    health_port: int | None = None
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    plugin_entry_point_group: str = "bertserve.heads"
    plugins_allow: tuple[str, ...] | None = None
    plugins_deny: tuple[str, ...] = ()
    security: SecurityConfig = field(default_factory=SecurityConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)
