"""The `bertserve` command: run a server, inspect heads, call a running server."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
from collections.abc import Sequence
from typing import Any

from bertserve.client_commands import add_commands as add_client_commands
from bertserve.config import ServerConfig, StartupError
from bertserve.download import add_commands as add_download_commands
from bertserve.lifecycle import serve_until_signalled
from bertserve.settings import (
    ResolvedSettings,
    add_setting_flags,
    config_or_exit,
    describe_settings,
    exit_on_config_error,
    resolve_settings,
    settings_markdown,
)
from bertserve.training.commands import add_commands as add_training_commands
from bertserve.version import version_report
from bertserve.wire.logs import configure_logging

log = logging.getLogger("bertserve")


def main(argv: Sequence[str] | None = None) -> int:
    parser = _build_parser()
    args = parser.parse_args(argv)
    if args.handler is not _serve:  # serve configures logging from its settings
        level = getattr(args, "setting__logging__level", None) or getattr(args, "log_level", "INFO")
        logging.basicConfig(level=str(level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except KeyboardInterrupt:
        return 130
    except StartupError as error:  # e.g. a model neither in the hub cache nor on the hub
        raise SystemExit(f"start-up error: {error}") from None


SERVE_EPILOG = """\
other environment variables it reads:
  models from the hub    HF_TOKEN (or the stored login), HF_HUB_CACHE / HF_HOME (the cache,
                         unless --model-cache-dir), HF_HUB_OFFLINE=1 (the cache only),
                         HF_HUB_DISABLE_PROGRESS_BARS; fill the cache with `bertserve download`
  tracing                on when OTEL_TRACES_EXPORTER (otlp, console), OTEL_EXPORTER_OTLP_ENDPOINT
                         or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT is set, else off; OTEL_SERVICE_NAME
                         (default bertserve), OTEL_SDK_DISABLED; needs `pip install 'bertserve[tracing]'`
every successful inference call returns x-total-time, x-tokenization-time, x-queue-time and
x-inference-time (milliseconds) in its trailing metadata (HTTP: response headers)
"""


class _Parser(argparse.ArgumentParser):
    """An argument parser that takes no abbreviated flags (``--tokens`` is not ``--tokens-file``).

    Subcommand parsers are made with the parser's own class, so this holds for all of them.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)


class _Version(argparse.Action):
    """``--version``: the versions as `version_report` lays them out (argparse's own action rewraps them)."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        print(version_report())
        parser.exit()


def _build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="bertserve", description="gRPC server for one shared BERT encoder with task heads")
    parser.add_argument("--version", action=_Version, help="print the versions and exit")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Settings: flag > BERTSERVE_* environment > --config TOML file > default.",
        epilog=SERVE_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_setting_flags(serve)
    serve.set_defaults(handler=_serve)

    config = commands.add_parser("config", help="inspect the configuration")
    config_commands = config.add_subparsers(dest="config_command", required=True)
    show = config_commands.add_parser(
        "show", help="print the effective configuration (secrets masked) and where each value comes from"
    )
    add_setting_flags(show)
    show.set_defaults(handler=_config_show)
    docs = config_commands.add_parser(
        "docs", help="print every setting (key, environment variable, flag, default, help) as the README's table"
    )
    docs.add_argument("--json", action="store_true", help="print JSON, with each setting's limits")
    docs.set_defaults(handler=_config_docs)

    heads = commands.add_parser("heads", help="load the encoder and list which heads load, and why not")
    add_setting_flags(heads)
    heads.add_argument("--json", action="store_true", help="print JSON")
    heads.set_defaults(handler=_heads)

    add_client_commands(commands)
    add_training_commands(commands)
    add_download_commands(commands)
    return parser


def _resolve(args: argparse.Namespace) -> tuple[ResolvedSettings, ServerConfig]:
    """The settings from every source and the config they make; a bad value exits naming it."""
    resolved = exit_on_config_error(lambda: resolve_settings(args, os.environ))
    return resolved, exit_on_config_error(resolved.to_config)


def _config(args: argparse.Namespace) -> ServerConfig:
    return config_or_exit(args, os.environ)


def _config_show(args: argparse.Namespace) -> int:
    resolved, _ = _resolve(args)  # the config too: its cross-field checks must pass
    print(resolved.show(), end="")
    return 0


def _config_docs(args: argparse.Namespace) -> int:
    text = json.dumps(describe_settings(), indent=2) + "\n" if args.json else settings_markdown()
    print(text, end="")
    return 0


def _serve(args: argparse.Namespace) -> int:
    config = _config(args)
    configure_logging(config.logging)
    try:
        return asyncio.run(serve_until_signalled(config))
    except StartupError as error:
        raise SystemExit(f"start-up error: {error}") from None


def _heads(args: argparse.Namespace) -> int:
    from bertserve.app import load_encoder, server_plugins
    from bertserve.model.plugins import load_heads, register_plugins

    config = _config(args)
    encoder = load_encoder(config)
    registry = register_plugins(config, server_plugins(config))
    load_heads(registry, encoder, config)
    rows = [
        {
            "name": r.head.name,
            "task": r.head.task,
            "state": r.state.value,
            "plugin": r.plugin.name,
            "package": r.plugin.package,
            "version": r.plugin.version,
            "reason": r.reason,
        }
        for r in registry.records()
    ]
    problems = [{"plugin": p.plugin, "error": p.error} for p in registry.problems]
    if args.json:
        print(json.dumps({"encoder": encoder.model_name, "heads": rows, "plugin_problems": problems}, indent=2))
        return 0
    print(f"encoder: {encoder.model_name} ({encoder.device}, {encoder.dtype_name}, fingerprint {encoder.fingerprint})")
    for row in rows:
        source = f"{row['package']} {row['version']}".strip() or row["plugin"]
        print(f"  {row['name']:<20} {row['state']:<12} {source}\n  {'':<20} {row['reason']}")
    for problem in problems:
        print(f"  plugin {problem['plugin']} not loaded: {problem['error']}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
