"""Server configuration: one immutable object built by the CLI or by tests.

Every attribute that is a setting takes its default and its minimum from the
settings table (`bertserve.settings_table`), so ``ServerConfig()`` is what
``bertserve serve`` runs with no flag, file or environment variable.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from bertserve.settings_table import CONFIG_DEFAULTS, check_limits, setting_field

DEFAULT_PORT: int = CONFIG_DEFAULTS["port"]


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

    max_batch_size: int = setting_field("batching.max_batch_size")
    max_batch_tokens: int = setting_field("batching.max_batch_tokens")
    max_delay_ms: float = setting_field("batching.max_delay_ms")
    max_queue_rows: int = setting_field("batching.max_queue_rows")

    def __post_init__(self) -> None:
        check_limits(self, "batching")


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

    tls_cert: Path | None = setting_field("security.tls_cert")
    tls_key: Path | None = setting_field("security.tls_key")
    tls_client_ca: Path | None = setting_field("security.tls_client_ca")
    tokens_file: Path | None = setting_field("security.tokens_file")
    tokens: tuple[str, ...] = setting_field("security.tokens")  # secret: left out of repr
    public_reflection: bool = setting_field("security.public_reflection")
    metrics_require_token: bool = setting_field("security.metrics_require_token")

    @property
    def tls(self) -> bool:
        return self.tls_cert is not None

    @property
    def auth(self) -> bool:
        return self.tokens_file is not None or bool(self.tokens)


@dataclass(frozen=True)
class MetricsConfig:
    """The Prometheus endpoint: ``http://host:port/metrics``; `port` None turns it off, 0 picks one.

    Off by default (setting ``metrics.enabled``); ``metrics.port`` is the port it takes when on.
    """

    host: str = setting_field("metrics.host")
    port: int | None = setting_field("metrics.port")

    def __post_init__(self) -> None:
        check_limits(self, "metrics")


@dataclass(frozen=True)
class HttpConfig:
    """The HTTP/JSON gateway (`bertserve.wire.http`): `port` None turns it off (the default), 0 picks one.

    It serves every unary RPC as ``POST /package.Service/Method`` with JSON
    bodies, over HTTPS with the gRPC side's certificate when TLS is on.
    """

    host: str = setting_field("http.host")
    port: int | None = setting_field("http.port")

    def __post_init__(self) -> None:
        check_limits(self, "http")


@dataclass(frozen=True)
class LoggingConfig:
    """Log level and format (``plain`` or ``json``).

    Every request is logged at DEBUG with its request id, head, duration and
    status; failed requests are logged at WARNING (client errors) or ERROR
    (server errors) at any level.
    """

    level: str = setting_field("logging.level")
    format: str = setting_field("logging.format")

    @property
    def progress_bars(self) -> bool:
        """Whether download bars may go to stderr: not with JSON logs, whose every line must stay JSON."""
        return self.format != "json"


@dataclass(frozen=True)
class ServerConfig:
    """Everything the server needs to start.

    `model` is a local folder or a hub id; None selects the offline default
    encoder. A hub id is read at `revision` (None: the hub's default branch)
    from the hub cache `cache_dir` (None: the hub library's own), and fetched
    into it when missing (`bertserve.model.hub`). `head_files` maps a head name (e.g. ``"sentiment"``) to its head
    file. `device` is ``"auto"``, ``"cpu"`` or ``"cuda[:N]"``; `dtype` is
    ``"auto"`` (float32 on CPU, bfloat16 or float16 on CUDA), ``"float32"``,
    ``"float16"``, ``"bfloat16"`` or ``"int8"`` (CPU only, never the default:
    the encoder layers' linear layers dynamically quantized to int8, float32
    activations; see `bertserve.nn.quantize`). `plugins_allow` (None: all) and
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
    A port in use stops start-up unless `reuse_port` shares it (SO_REUSEPORT).

    A forward (encoder and heads on one batch) running past
    `forward_timeout_seconds` is stuck: health and liveness turn NOT_SERVING
    and waiting requests fail UNAVAILABLE until it returns, or, with
    `exit_on_stuck_forward`, the process exits for its orchestrator to restart it.
    """

    model: str | None = setting_field("model")
    revision: str | None = setting_field("revision")
    cache_dir: Path | None = setting_field("cache_dir")
    head_files: dict[str, Path] = setting_field("head_files")
    device: str = setting_field("device")
    dtype: str = setting_field("dtype")
    host: str = setting_field("host")
    port: int = setting_field("port")
    max_sequence_length: int | None = setting_field("max_sequence_length")
    max_inputs_per_request: int = setting_field("max_inputs_per_request")
    max_tokens_per_request: int = setting_field("max_tokens_per_request")
    max_concurrent_requests: int = setting_field("max_concurrent_requests")
    max_message_bytes: int = setting_field("max_message_bytes")
    torch_threads: int | None = setting_field("torch_threads")
    worker_threads: int | None = setting_field("worker_threads")
    warmup: bool = setting_field("warmup")
    reuse_port: bool = setting_field("reuse_port")
    forward_timeout_seconds: float | None = setting_field("forward_timeout_seconds")
    exit_on_stuck_forward: bool = setting_field("exit_on_stuck_forward")
    shutdown_grace_seconds: float = setting_field("shutdown_grace_seconds")
    keepalive_seconds: float = setting_field("keepalive_seconds")
    max_connection_age_seconds: float | None = setting_field("max_connection_age_seconds")
    health_port: int | None = setting_field("health_port")
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    plugin_entry_point_group: str = "bertserve.heads"  # not a setting: tests and embedding apps only
    plugins_allow: tuple[str, ...] | None = setting_field("plugins_allow")
    plugins_deny: tuple[str, ...] = setting_field("plugins_deny")
    security: SecurityConfig = field(default_factory=SecurityConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)

    def __post_init__(self) -> None:
        check_limits(self)


class StartupError(RuntimeError):
    """Start-up cannot have what the configuration names (a port in use); the message names the setting."""
