"""The settings table: every server setting declared once, and what is derived from it.

Each `Setting` holds a key's type, default, limits, flag and help. From the
table come the defaults and limit checks of the config dataclasses
(`bertserve.config`), the mapping of resolved values onto `ServerConfig`
(`config_values`), the command-line flags and sources (`bertserve.settings`),
and the settings table of the README (`settings_markdown`, printed by
``bertserve config docs``). This module imports nothing of the server.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ENV_PREFIX = "BERTSERVE_"

# Sections whose keys are attributes of `ServerConfig` itself; the others are nested configs.
_TOP_LEVEL_SECTIONS = ("server", "model", "limits")


@dataclass(frozen=True)
class Setting:
    """One configuration key.

    `kind` is one of ``int``, ``float``, ``bool``, ``str``, ``path``, ``list``
    (of strings) or ``table`` (head name to path). `nullable` settings accept
    ``"none"`` (or an absent TOML key) for None. `choices` limits a ``str``.
    `secret` values are masked by ``bertserve config show`` and have no flag
    (command lines are visible to every user of the machine).

    `field` is the `ServerConfig` attribute the value sets (``"batching.max_batch_size"``
    is ``config.batching.max_batch_size``); empty, it follows from the key:
    the keys of ``server``, ``model`` and ``limits`` are attributes of
    `ServerConfig` itself, the other sections are its nested configs. A
    ``bool`` that `switches` another setting has no field of its own: false
    sets that setting's field to None, and giving that setting explicitly
    turns it on while the switch is left at its default.
    """

    key: str
    kind: str
    default: Any
    help: str
    flag: str | None = None
    minimum: float | None = None
    nullable: bool = False
    choices: tuple[str, ...] = ()
    secret: bool = False
    field: str = ""
    switches: str | None = None

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace(".", "_")

    @property
    def option(self) -> str:
        return self.flag or "--" + self.key.split(".")[1].replace("_", "-")

    @property
    def dest(self) -> str:
        return "setting__" + self.key.replace(".", "__")

    @property
    def has_flag(self) -> bool:
        return not self.secret

    @property
    def config_path(self) -> str | None:
        """The dotted `ServerConfig` attribute this setting fills; None for a switch."""
        if self.switches is not None:
            return None
        if self.field:
            return self.field
        section, name = self.key.split(".")
        return name if section in _TOP_LEVEL_SECTIONS else self.key


SETTINGS: tuple[Setting, ...] = (
    Setting("server.host", "str", "127.0.0.1", "interface to bind (0.0.0.0: every IPv4 interface)"),
    Setting("server.port", "int", 50051, "gRPC port (0 picks a free one)", minimum=0),
    Setting(
        "server.torch_threads",
        "int",
        None,
        "torch intra-op threads (default: usable CPUs, or OMP_NUM_THREADS)",
        minimum=1,
        nullable=True,
    ),
    Setting(
        "server.worker_threads",
        "int",
        None,
        "threads for large pre- and postprocessing (default: usable CPUs)",
        minimum=1,
        nullable=True,
    ),
    Setting("server.warmup", "bool", True, "run every head once before reporting SERVING"),
    Setting(
        "server.reuse_port",
        "bool",
        False,
        "share the gRPC and health ports with other processes (SO_REUSEPORT); off: a port in use stops start-up",
    ),
    Setting(
        "server.forward_timeout_seconds",
        "float",
        60.0,
        "a forward running longer is stuck: health and liveness NOT_SERVING, waiting requests UNAVAILABLE",
        minimum=0.001,
        nullable=True,
    ),
    Setting(
        "server.exit_on_stuck_forward",
        "bool",
        False,
        "exit with status 3 when a forward is stuck, for the orchestrator to restart the process",
    ),
    Setting(
        "server.shutdown_grace_seconds", "float", 30.0, "on SIGTERM, time accepted requests get to finish", minimum=0
    ),
    Setting(
        "server.keepalive_seconds",
        "float",
        60.0,
        "server keepalive ping interval; clients may ping every 10 s",
        minimum=1,
    ),
    Setting(
        "server.max_connection_age_seconds",
        "float",
        300.0,
        "close client connections after this age so clients re-resolve and find new replicas",
        minimum=1,
        nullable=True,
    ),
    Setting(
        "server.health_port",
        "int",
        None,
        "extra plaintext port serving only grpc.health.v1 (for probes when TLS is on)",
        minimum=0,
        nullable=True,
    ),
    Setting(
        "model.name",
        "str",
        None,
        "checkpoint folder or hub id (default: the offline all-MiniLM-L6-v2 encoder)",
        flag="--model",
        nullable=True,
        field="model",
    ),
    Setting(
        "model.revision",
        "str",
        None,
        "branch, tag or commit of a hub model (default: the hub's default branch)",
        nullable=True,
    ),
    Setting(
        "model.cache_dir",
        "path",
        None,
        "hub cache folder (default: the hub library's own, HF_HUB_CACHE or HF_HOME/hub)",
        flag="--model-cache-dir",
        nullable=True,
    ),
    Setting("model.device", "str", "auto", "auto, cpu, cuda or cuda:N"),
    Setting("model.dtype", "str", "auto", "encoder dtype", choices=("auto", "float32", "float16", "bfloat16", "int8")),
    Setting("model.max_sequence_length", "int", None, "cap on tokens per input row", minimum=8, nullable=True),
    Setting(
        "model.head_files",
        "table",
        {},
        "weights for a head, HEAD=PATH (repeatable; env: comma-separated)",
        flag="--head-file",
    ),
    Setting("batching.max_batch_size", "int", 32, "rows per encoder forward", minimum=1),
    Setting("batching.max_batch_tokens", "int", 16384, "real tokens per encoder forward", minimum=1),
    Setting("batching.max_delay_ms", "float", 0.0, "wait for a fuller batch (0: never wait while idle)", minimum=0),
    Setting("batching.max_queue_rows", "int", 4096, "queued rows before RESOURCE_EXHAUSTED", minimum=1),
    Setting("limits.max_inputs_per_request", "int", 1024, "inputs in one request", minimum=1),
    Setting(
        "limits.max_tokens_per_request",
        "int",
        131072,
        "tokens of all inputs of one request after tokenization",
        minimum=1,
    ),
    Setting("limits.max_concurrent_requests", "int", 1024, "requests in progress before RESOURCE_EXHAUSTED", minimum=1),
    Setting("limits.max_message_bytes", "int", 4 * 1024 * 1024, "largest request or response message", minimum=1024),
    Setting(
        "plugins.allow",
        "list",
        None,
        "plugins to use, comma-separated (default: all)",
        flag="--plugins-allow",
        nullable=True,
        field="plugins_allow",
    ),
    Setting(
        "plugins.deny", "list", (), "plugins not to use, comma-separated", flag="--plugins-deny", field="plugins_deny"
    ),
    Setting("security.tls_cert", "path", None, "PEM server certificate (turns TLS on)", nullable=True),
    Setting("security.tls_key", "path", None, "PEM private key of the server certificate", nullable=True),
    Setting(
        "security.tls_client_ca", "path", None, "PEM CA that client certificates must chain to (mTLS)", nullable=True
    ),
    Setting(
        "security.tokens_file",
        "path",
        None,
        "bearer tokens, one per line: TOKEN [NAME [METHOD-PATTERN,...]]",
        nullable=True,
    ),
    Setting("security.tokens", "list", (), "bearer tokens with full access (file or env only)", secret=True),
    Setting("security.public_reflection", "bool", False, "serve reflection without a token"),
    Setting("security.metrics_require_token", "bool", False, "the metrics endpoint needs a bearer token too"),
    Setting(
        "metrics.enabled",
        "bool",
        False,
        "serve Prometheus metrics (on by itself when metrics.port is given)",
        flag="--metrics",
        switches="metrics.port",
    ),
    Setting("metrics.host", "str", "127.0.0.1", "interface of the metrics endpoint", flag="--metrics-host"),
    Setting(
        "metrics.port", "int", 9090, "port of the metrics endpoint (0 picks one)", flag="--metrics-port", minimum=0
    ),
    Setting(
        "http.port",
        "int",
        None,
        "port of the HTTP/JSON gateway (off unless given; 0 picks one); HTTPS when TLS is on",
        flag="--http-port",
        minimum=0,
        nullable=True,
    ),
    Setting("http.host", "str", "127.0.0.1", "interface of the HTTP/JSON gateway", flag="--http-host"),
    Setting(
        "logging.level", "str", "INFO", "log level", flag="--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    ),
    Setting("logging.format", "str", "plain", "log line format", flag="--log-format", choices=("plain", "json")),
)

SETTINGS_BY_KEY: dict[str, Setting] = {setting.key: setting for setting in SETTINGS}
SETTINGS_BY_FIELD: dict[str, Setting] = {
    setting.config_path: setting for setting in SETTINGS if setting.config_path is not None
}


def field_value(setting: Setting, value: Any) -> Any:
    """A setting's value as its config attribute holds it: tuples for lists, paths for head files."""
    if value is None:
        return None
    if setting.kind == "list":
        return tuple(value)
    if setting.kind == "table":
        return {name: Path(path) for name, path in value.items()}
    if setting.kind == "path":
        return Path(value)
    return value


def config_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """Every config attribute (dotted path) to its value, from setting key to value."""
    result = {path: field_value(setting, values[setting.key]) for path, setting in SETTINGS_BY_FIELD.items()}
    for setting in SETTINGS:
        if setting.switches is not None and not values[setting.key]:
            result[SETTINGS_BY_KEY[setting.switches].config_path or ""] = None
    return result


CONFIG_DEFAULTS: dict[str, Any] = config_values({setting.key: setting.default for setting in SETTINGS})


def setting_field(path: str) -> Any:
    """The dataclass field for config attribute `path`, its default from the table."""
    default = CONFIG_DEFAULTS[path]
    shown = not SETTINGS_BY_FIELD[path].secret
    if isinstance(default, dict):
        return dataclasses.field(default_factory=lambda: dict(default), repr=shown)
    return dataclasses.field(default=default, repr=shown)


def check_limits(config: Any, section: str = "") -> None:
    """Raise ValueError for a config attribute below its setting's minimum (`section`: the nested config's name)."""
    for item in dataclasses.fields(config):
        setting = SETTINGS_BY_FIELD.get(f"{section}.{item.name}" if section else item.name)
        value = getattr(config, item.name)
        if setting is None or setting.minimum is None or value is None:
            continue
        if value < setting.minimum:
            raise ValueError(f"{item.name} must be at least {setting.minimum:g}, got {value!r} (setting {setting.key})")


def describe_settings() -> list[dict[str, Any]]:
    """Every setting's key, env variable, flag, default, help and limits: for docs and tools."""
    return [
        {
            "key": s.key,
            "env": s.env,
            "flag": s.option if s.has_flag else None,
            "default": list(s.default) if isinstance(s.default, tuple) else s.default,
            "help": s.help,
            "minimum": s.minimum,
            "choices": list(s.choices),
            "nullable": s.nullable,
            "secret": s.secret,
            "field": s.config_path,
        }
        for s in SETTINGS
    ]


def settings_markdown() -> str:
    """The README's settings table (Markdown), one row per setting."""
    rows = [
        "| key | environment | flag | default | what |",
        "| --- | --- | --- | --- | --- |",
    ]
    for s in SETTINGS:
        flag = f"`{s.option}`" if s.has_flag else "(none: file or env)"
        what = s.help
        if s.choices:
            what += "; one of " + ", ".join(f"`{choice}`" for choice in s.choices)
        if s.minimum is not None:
            what += f"; at least {s.minimum:g}"
        cells = [f"`{s.key}`", f"`{s.env}`", flag, f"`{doc_value(s.default)}`", what.replace("|", "\\|")]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def doc_value(value: Any) -> str:
    """A default as the docs and ``--help`` write it: ``unset``, ``true``, ``empty``, or the value."""
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, tuple | list | dict) and not value:
        return "empty"
    return str(value)


__all__ = [
    "CONFIG_DEFAULTS",
    "ENV_PREFIX",
    "SETTINGS",
    "SETTINGS_BY_FIELD",
    "SETTINGS_BY_KEY",
    "Setting",
    "check_limits",
    "config_values",
    "describe_settings",
    "doc_value",
    "field_value",
    "setting_field",
    "settings_markdown",
]
