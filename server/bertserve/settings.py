"""Configuration sources for `bertserve serve`: one TOML file, `BERTSERVE_*` variables, flags.

Every setting is declared once in `SETTINGS` with its TOML key (``section.key``),
type, default, flag and help. Precedence, highest first: command-line flag,
environment variable (``BERTSERVE_<SECTION>_<KEY>``), the TOML file (``--config``
or ``BERTSERVE_CONFIG``), the default. Every value is checked where it is read,
and an error names the key and the source it came from.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import BatchingConfig, LoggingConfig, MetricsConfig, SecurityConfig, ServerConfig
from .security import check_security

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

CONFIG_FILE_VARIABLE = "BERTSERVE_CONFIG"
ENV_PREFIX = "BERTSERVE_"


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range; the message names the key."""


@dataclass(frozen=True)
class Setting:
    """One configuration key.

    `kind` is one of ``int``, ``float``, ``bool``, ``str``, ``path``, ``list``
    (of strings) or ``table`` (head name to path). `nullable` settings accept
    ``"none"`` (or an absent TOML key) for None. `choices` limits a ``str``.
    `secret` values are masked by ``bertserve config show``.
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

    @property
    def env(self) -> str:
        return ENV_PREFIX + self.key.upper().replace(".", "_")

    @property
    def option(self) -> str:
        return self.flag or "--" + self.key.split(".")[1].replace("_", "-")

    @property
    def dest(self) -> str:
        return "setting__" + self.key.replace(".", "__")


_B = BatchingConfig()
_S = ServerConfig()

SETTINGS: tuple[Setting, ...] = (
    Setting("server.host", "str", "0.0.0.0", "interface to bind"),
    Setting("server.port", "int", _S.port, "gRPC port (0 picks a free one)", minimum=0),
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
    Setting("server.warmup", "bool", _S.warmup, "run every head once before reporting SERVING"),
    Setting(
        "server.shutdown_grace_seconds",
        "float",
        _S.shutdown_grace_seconds,
        "on SIGTERM, time accepted requests get to finish",
        minimum=0,
    ),
    Setting(
        "server.keepalive_seconds",
        "float",
        _S.keepalive_seconds,
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
    ),
    Setting("model.device", "str", _S.device, "auto, cpu, cuda or cuda:N"),
    Setting(
        "model.dtype", "str", _S.dtype, "encoder dtype", choices=("auto", "float32", "float16", "bfloat16", "int8")
    ),
    Setting("model.max_sequence_length", "int", None, "cap on tokens per input row", minimum=8, nullable=True),
    Setting(
        "model.head_files",
        "table",
        {},
        "weights for a head, HEAD=PATH (repeatable; env: comma-separated)",
        flag="--head-file",
    ),
    Setting("batching.max_batch_size", "int", _B.max_batch_size, "rows per encoder forward", minimum=1),
    Setting("batching.max_batch_tokens", "int", _B.max_batch_tokens, "real tokens per encoder forward", minimum=1),
    Setting(
        "batching.max_delay_ms",
        "float",
        _B.max_delay_ms,
        "wait for a fuller batch (0: never wait while idle)",
        minimum=0,
    ),
    Setting("batching.max_queue_rows", "int", _B.max_queue_rows, "queued rows before RESOURCE_EXHAUSTED", minimum=1),
    Setting("limits.max_inputs_per_request", "int", _S.max_inputs_per_request, "inputs in one request", minimum=1),
    Setting(
        "limits.max_tokens_per_request",
        "int",
        _S.max_tokens_per_request,
        "tokens of all inputs of one request after tokenization",
        minimum=1,
    ),
    Setting(
        "limits.max_concurrent_requests",
        "int",
        _S.max_concurrent_requests,
        "requests in progress before RESOURCE_EXHAUSTED",
        minimum=1,
    ),
    Setting(
        "limits.max_message_bytes",
        "int",
        _S.max_message_bytes,
        "largest request or response message",
        minimum=1024,
    ),
    Setting(
        "plugins.allow",
        "list",
        None,
        "plugins to use, comma-separated (default: all)",
        flag="--plugins-allow",
        nullable=True,
    ),
    Setting("plugins.deny", "list", [], "plugins not to use, comma-separated", flag="--plugins-deny"),
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
    Setting("security.tokens", "list", [], "bearer tokens with full access (file or env only)", secret=True),
    Setting("security.public_reflection", "bool", False, "serve reflection without a token"),
    Setting("security.metrics_require_token", "bool", False, "the metrics endpoint needs a bearer token too"),
    Setting("metrics.enabled", "bool", True, "serve Prometheus metrics", flag="--metrics"),
    Setting("metrics.host", "str", "0.0.0.0", "interface of the metrics endpoint", flag="--metrics-host"),
    Setting(
        "metrics.port", "int", 9090, "port of the metrics endpoint (0 picks one)", flag="--metrics-port", minimum=0
    ),
    Setting(
        "logging.level", "str", "INFO", "log level", flag="--log-level", choices=("DEBUG", "INFO", "WARNING", "ERROR")
    ),
    Setting("logging.format", "str", "plain", "log line format", flag="--log-format", choices=("plain", "json")),
)

SETTINGS_BY_KEY = {setting.key: setting for setting in SETTINGS}

# Settings a flag must never carry: command lines are visible to every user of the machine.
_NO_FLAG = {"security.tokens"}


@dataclass(frozen=True)
class ResolvedSettings:
    """The effective value of every setting and where it came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    config_file: Path | None

    def to_config(self) -> ServerConfig:
        """The `ServerConfig` these settings describe; cross-field problems raise `ConfigError`."""
        v = self.values
        try:
            config = ServerConfig(
                model=v["model.name"],
                head_files={name: Path(path) for name, path in v["model.head_files"].items()},
                device=v["model.device"],
                dtype=v["model.dtype"],
                host=v["server.host"],
                port=v["server.port"],
                max_sequence_length=v["model.max_sequence_length"],
                max_inputs_per_request=v["limits.max_inputs_per_request"],
                max_tokens_per_request=v["limits.max_tokens_per_request"],
                max_concurrent_requests=v["limits.max_concurrent_requests"],
                max_message_bytes=v["limits.max_message_bytes"],
                torch_threads=v["server.torch_threads"],
                worker_threads=v["server.worker_threads"],
                warmup=v["server.warmup"],
                shutdown_grace_seconds=v["server.shutdown_grace_seconds"],
                keepalive_seconds=v["server.keepalive_seconds"],
                max_connection_age_seconds=v["server.max_connection_age_seconds"],
                health_port=v["server.health_port"],
                batching=BatchingConfig(
                    max_batch_size=v["batching.max_batch_size"],
                    max_batch_tokens=v["batching.max_batch_tokens"],
                    max_delay_ms=v["batching.max_delay_ms"],
                    max_queue_rows=v["batching.max_queue_rows"],
                ),
                plugins_allow=tuple(v["plugins.allow"]) if v["plugins.allow"] is not None else None,
                plugins_deny=tuple(v["plugins.deny"]),
                security=SecurityConfig(
                    tls_cert=v["security.tls_cert"],
                    tls_key=v["security.tls_key"],
                    tls_client_ca=v["security.tls_client_ca"],
                    tokens_file=v["security.tokens_file"],
                    tokens=tuple(v["security.tokens"]),
                    public_reflection=v["security.public_reflection"],
                    metrics_require_token=v["security.metrics_require_token"],
                ),
                metrics=MetricsConfig(host=v["metrics.host"], port=v["metrics.port"] if v["metrics.enabled"] else None),
                logging=LoggingConfig(level=v["logging.level"], format=v["logging.format"]),
            )
            check_security(config.security)
            return config
        except ValueError as error:
            raise ConfigError(str(error)) from error

    def show(self) -> str:
        """The effective configuration as TOML, each value annotated with its source; secrets masked."""
        sections: dict[str, list[str]] = {}
        for setting in SETTINGS:
            section, name = setting.key.split(".")
            value = self.values[setting.key]
            if setting.secret and value:
                value = ["********"] * len(value)
            line = f"{name} = {_toml_value(value)}" if value is not None else f"# {name} = (not set)"
            sections.setdefault(section, []).append(f"{line:<60} # {self.sources[setting.key]}")
        origin = f"# config file: {self.config_file}" if self.config_file else "# config file: none"
        blocks = [f"[{section}]\n" + "\n".join(lines) for section, lines in sections.items()]
        return origin + "\n\n" + "\n\n".join(blocks) + "\n"


def add_setting_flags(parser: argparse.ArgumentParser) -> None:
    """Add ``--config`` and one flag per setting; unset flags leave the lower sources in charge."""
    parser.add_argument(
        "--config", type=Path, default=None, help=f"TOML configuration file (env: {CONFIG_FILE_VARIABLE})"
    )
    for setting in SETTINGS:
        if setting.key in _NO_FLAG:
            continue
        help_text = f"{setting.help} [{setting.key}, env {setting.env}]"
        if setting.kind == "bool":
            parser.add_argument(
                setting.option,
                dest=setting.dest,
                action=argparse.BooleanOptionalAction,
                default=argparse.SUPPRESS,
                help=help_text,
            )
        elif setting.kind == "table":
            parser.add_argument(
                setting.option,
                dest=setting.dest,
                action="append",
                metavar="HEAD=PATH",
                default=argparse.SUPPRESS,
                help=help_text,
            )
        else:
            metavar = "|".join(setting.choices) if setting.choices else setting.kind.upper()
            parser.add_argument(
                setting.option, dest=setting.dest, metavar=metavar, default=argparse.SUPPRESS, help=help_text
            )


def resolve_settings(
    flags: argparse.Namespace | Mapping[str, Any], environ: Mapping[str, str], *, config_file: Path | None = None
) -> ResolvedSettings:
    """Merge defaults, the TOML file, the environment and flags, checking each value.

    `flags` is the parsed namespace of `add_setting_flags` (or a mapping of
    setting key to raw flag value). The file is `config_file`, the
    namespace's ``config``, or ``$BERTSERVE_CONFIG``, in that order.
    """
    raw_flags = _flag_values(flags)
    if config_file is None and isinstance(flags, argparse.Namespace):
        config_file = getattr(flags, "config", None)
    if config_file is None and environ.get(CONFIG_FILE_VARIABLE):
        config_file = Path(environ[CONFIG_FILE_VARIABLE])

    values = {setting.key: setting.default for setting in SETTINGS}
    sources = {setting.key: "default" for setting in SETTINGS}
    if config_file is not None:
        for key, value in _read_file(config_file).items():
            values[key] = _parse(SETTINGS_BY_KEY[key], value, f"{config_file}: {key}", typed=True)
            sources[key] = f"file {config_file}"
    _check_environment(environ)
    for setting in SETTINGS:
        if setting.env in environ:
            values[setting.key] = _parse(setting, environ[setting.env], f"environment {setting.env}", typed=False)
            sources[setting.key] = f"env {setting.env}"
    for key, value in raw_flags.items():
        setting = SETTINGS_BY_KEY[key]
        values[key] = _parse(setting, value, f"flag {setting.option}", typed=False)
        sources[key] = f"flag {setting.option}"
    resolved = ResolvedSettings(values, sources, config_file)
    _check_combinations(resolved)
    return resolved


def _flag_values(flags: argparse.Namespace | Mapping[str, Any]) -> dict[str, Any]:
    if isinstance(flags, Mapping):
        unknown = [key for key in flags if key not in SETTINGS_BY_KEY]
        if unknown:
            raise ConfigError(f"unknown setting {unknown[0]!r}{_suggestion(unknown[0], SETTINGS_BY_KEY)}")
        return dict(flags)
    return {setting.key: getattr(flags, setting.dest) for setting in SETTINGS if hasattr(flags, setting.dest)}


def _read_file(path: Path) -> dict[str, Any]:
    """The file's settings as ``section.key`` to value; unknown sections and keys are errors."""
    try:
        with path.open("rb") as stream:
            document = tomllib.load(stream)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {path} is not valid TOML: {error}") from None
    flat: dict[str, Any] = {}
    sections = {key.split(".")[0] for key in SETTINGS_BY_KEY}
    for section, table in document.items():
        if section not in sections:
            raise ConfigError(f"{path}: unknown section [{section}]{_suggestion(section, sections)}")
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: {section} must be a table ([{section}])")
        for name, value in table.items():
            key = f"{section}.{name}"
            if key not in SETTINGS_BY_KEY:
                raise ConfigError(f"{path}: unknown key {key!r}{_suggestion(key, SETTINGS_BY_KEY)}")
            flat[key] = value
    return flat


def _check_environment(environ: Mapping[str, str]) -> None:
    """Warn about `BERTSERVE_*` variables that name no setting (a typo, most likely).

    Only a warning: Kubernetes injects ``BERTSERVE_SERVICE_HOST`` and the like
    into every pod of a namespace with a Service named ``bertserve``.
    """
    known = {setting.env for setting in SETTINGS} | {CONFIG_FILE_VARIABLE}
    for name in sorted(environ):
        if name.startswith(ENV_PREFIX) and name not in known:
            log.warning("ignoring environment variable %s: no such setting%s", name, _suggestion(name, known))


def _suggestion(name: str, candidates: Any) -> str:
    close = difflib.get_close_matches(name, list(candidates), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse(setting: Setting, value: Any, where: str, *, typed: bool) -> Any:
    """Check and convert one raw value; `typed` values come from TOML, the others are strings."""

    def fail(expected: str) -> ConfigError:
        shown = "********" if setting.secret else repr(value)
        return ConfigError(f"{where}: {setting.key} must be {expected}, got {shown}")

    if setting.nullable and (value is None or (not typed and isinstance(value, str) and value.lower() == "none")):
        return None
    kind = setting.kind
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and not typed and value.lower() in _TRUE | _FALSE:
            return value.lower() in _TRUE
        raise fail("true or false")
    if kind in ("int", "float"):
        number: int | float
        if typed:
            if (
                isinstance(value, bool)
                or not isinstance(value, int | float)
                or (kind == "int" and isinstance(value, float))
            ):
                raise fail(f"{'an integer' if kind == 'int' else 'a number'}")
            number = value
        else:
            try:
                number = int(value) if kind == "int" else float(value)
            except (TypeError, ValueError):
                raise fail("an integer" if kind == "int" else "a number") from None
        if setting.minimum is not None and number < setting.minimum:
            raise fail(f"at least {setting.minimum:g}")
        return number
    if kind in ("str", "path"):
        if not isinstance(value, str) or not value.strip():
            raise fail("a non-empty string")
        if setting.choices and value not in setting.choices:
            upper = value.upper() if setting.key == "logging.level" else value
            if upper not in setting.choices:
                raise fail(f"one of {', '.join(setting.choices)}")
            value = upper
        return Path(value) if kind == "path" else value
    if kind == "list":
        items = value if typed else [item.strip() for item in str(value).split(",") if item.strip()]
        if not isinstance(items, list) or not all(isinstance(item, str) and item.strip() for item in items):
            raise fail("a list of non-empty strings")
        return list(items)
    if kind == "table":
        return _parse_table(setting, value, where, typed=typed, fail=fail)
    raise AssertionError(f"unknown setting kind {kind}")


def _parse_table(setting: Setting, value: Any, where: str, *, typed: bool, fail: Any) -> dict[str, str]:
    if typed:
        if not isinstance(value, dict) or not all(isinstance(v, str) and v for v in value.values()):
            raise fail('a table of HEAD = "PATH"')
        return dict(value)
    specs = value if isinstance(value, list) else [item for item in str(value).split(",") if item.strip()]
    table: dict[str, str] = {}
    for spec in specs:
        name, sep, path = spec.strip().partition("=")
        if not sep or not name.strip() or not path.strip():
            raise ConfigError(f"{where}: {setting.key} expects HEAD=PATH, got {spec!r}")
        table[name.strip()] = path.strip()
    return table


def _check_combinations(resolved: ResolvedSettings) -> None:
    v = resolved.values
    if v["security.metrics_require_token"] and not (v["security.tokens"] or v["security.tokens_file"]):
        raise ConfigError("security.metrics_require_token is set but no token is configured (security.tokens_file)")
    for name, path in v["model.head_files"].items():
        if not Path(path).is_file():
            raise ConfigError(f"model.head_files: the file for head {name!r}, {path}, not found")
    if v["metrics.enabled"] and v["metrics.port"] != 0 and v["metrics.port"] == v["server.port"]:
        raise ConfigError(f"metrics.port and server.port are both {v['server.port']}; give metrics its own port")


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, Path):
        return json.dumps(str(value))
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {_toml_value(val)}" for k, val in value.items()) + " }"
    return json.dumps(str(value))


def config_from_sources(
    flags: argparse.Namespace | Mapping[str, Any], environ: Mapping[str, str], *, config_file: Path | None = None
) -> ServerConfig:
    """`resolve_settings(...).to_config()`: the server configuration from all sources."""
    return resolve_settings(flags, environ, config_file=config_file).to_config()


def describe_settings() -> list[dict[str, Any]]:
    """Every setting's key, env variable, flag, default and help: for docs and tests."""
    return [
        {
            "key": s.key,
            "env": s.env,
            "flag": None if s.key in _NO_FLAG else s.option,
            "default": s.default,
            "help": s.help,
        }
        for s in SETTINGS
    ]


__all__: Sequence[str] = [
    "CONFIG_FILE_VARIABLE",
    "ConfigError",
    "ResolvedSettings",
    "SETTINGS",
    "Setting",
    "add_setting_flags",
    "config_from_sources",
    "describe_settings",
    "resolve_settings",
]
