"""Configuration sources for `bertserve serve`: one TOML file, `BERTSERVE_*` variables, flags.

Every setting is declared once in `SETTINGS` (`bertserve.settings_table`) with
its TOML key (``section.key``), type, default, limits, flag and help; this
module reads the sources and builds the `ServerConfig`. Precedence, highest
first: command-line flag, environment variable (``BERTSERVE_<SECTION>_<KEY>``),
the TOML file (``--config`` or ``BERTSERVE_CONFIG``), the default. Every value
is checked where it is read, and an error names the key and the source it came
from.
"""

from __future__ import annotations

import argparse
import difflib
import json
import logging
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, TypeVar

from bertserve.client_commands import CLIENT_VARIABLES
from bertserve.config import ServerConfig
from bertserve.settings_table import (
    ENV_PREFIX,
    SETTINGS,
    SETTINGS_BY_KEY,
    Setting,
    config_values,
    describe_settings,
    doc_value,
    settings_markdown,
)
from bertserve.wire.security import check_security

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

log = logging.getLogger(__name__)

CONFIG_FILE_VARIABLE = "BERTSERVE_CONFIG"

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is missing, malformed or out of range; the message names the key."""


@dataclass(frozen=True)
class ResolvedSettings:
    """The effective value of every setting and where it came from."""

    values: dict[str, Any]
    sources: dict[str, str]
    config_file: Path | None

    def to_config(self) -> ServerConfig:
        """The `ServerConfig` these settings describe; cross-field problems raise `ConfigError`."""
        try:
            config = build_config(config_values(self.values))
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


def add_setting_flags(parser: argparse.ArgumentParser, keys: Sequence[str] | None = None) -> None:
    """Add ``--config`` and one flag per setting (or per setting of `keys`).

    Unset flags leave the lower sources in charge; each flag's help names its
    default, its TOML key and its environment variable.
    """
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help=f"TOML configuration file (default: unset; env {CONFIG_FILE_VARIABLE})",
    )
    chosen = SETTINGS if keys is None else tuple(SETTINGS_BY_KEY[key] for key in keys)
    for setting in chosen:
        if not setting.has_flag:
            continue
        help_text = f"{_with_default(setting)} [{setting.key}, env {setting.env}]"
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


def _with_default(setting: Setting) -> str:
    """The setting's help with its default, unless the help already says what an unset value means."""
    if "default" in setting.help:
        return setting.help
    return f"{setting.help} (default: {doc_value(setting.default)})"


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
    _apply_switches(values, sources)
    resolved = ResolvedSettings(values, sources, config_file)
    _check_combinations(resolved)
    return resolved


def _apply_switches(values: dict[str, Any], sources: dict[str, str]) -> None:
    """A switch left at its default turns on when the setting it switches was given (``--metrics-port``)."""
    for setting in SETTINGS:
        switched = setting.switches
        if switched is not None and sources[setting.key] == "default" and sources[switched] != "default":
            values[setting.key] = True
            sources[setting.key] = f"implied by {switched} ({sources[switched]})"


def build_config(fields: Mapping[str, Any]) -> ServerConfig:
    """A `ServerConfig` from dotted attribute paths (``"batching.max_batch_size"``) to values.

    Attributes not named keep their defaults; a nested config is built from
    its named attributes over its defaults.
    """
    top: dict[str, Any] = {}
    nested: dict[str, dict[str, Any]] = {}
    for path, value in fields.items():
        section, _, name = path.rpartition(".")
        if section:
            nested.setdefault(section, {})[name] = value
        else:
            top[name] = value
    defaults = ServerConfig()
    for section, attributes in nested.items():
        top[section] = replace(getattr(defaults, section), **attributes)
    return ServerConfig(**top)


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

    The client subcommands' variables (``BERTSERVE_ADDRESS``, ``BERTSERVE_TOKEN``) are known too.
    Only a warning: Kubernetes injects ``BERTSERVE_SERVICE_HOST`` and the like
    into every pod of a namespace with a Service named ``bertserve``.
    """
    known = {setting.env for setting in SETTINGS} | {CONFIG_FILE_VARIABLE, *CLIENT_VARIABLES}
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


def exit_on_config_error(build: Callable[[], T]) -> T:
    """`build()`, or exit with the commands' one message naming the bad setting and its source."""
    try:
        return build()
    except ConfigError as error:
        raise SystemExit(f"configuration error: {error}") from None


def config_or_exit(flags: argparse.Namespace | Mapping[str, Any], environ: Mapping[str, str]) -> ServerConfig:
    """`config_from_sources`, or exit naming the bad setting (`exit_on_config_error`)."""
    return exit_on_config_error(lambda: config_from_sources(flags, environ))


def config_from_sources(
    flags: argparse.Namespace | Mapping[str, Any], environ: Mapping[str, str], *, config_file: Path | None = None
) -> ServerConfig:
    """`resolve_settings(...).to_config()`: the server configuration from all sources."""
    return resolve_settings(flags, environ, config_file=config_file).to_config()


__all__: Sequence[str] = [
    "CONFIG_FILE_VARIABLE",
    "ConfigError",
    "ResolvedSettings",
    "SETTINGS",
    "Setting",
    "add_setting_flags",
    "build_config",
    "config_from_sources",
    "config_or_exit",
    "exit_on_config_error",
    "describe_settings",
    "resolve_settings",
    "settings_markdown",
]
