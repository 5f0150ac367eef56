"""The `bertserve` command: run a server, inspect heads, call a running server."""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import os
import sys
from collections.abc import Sequence
from typing import Any

from bertserve.config import DEFAULT_PORT, ServerConfig, StartupError
from bertserve.lifecycle import serve_until_signalled
from bertserve.plugin.schema import to_json
from bertserve.plugin.tasks import FillMaskInput, QuestionAnsweringInput
from bertserve.settings import (
    ConfigError,
    ResolvedSettings,
    add_setting_flags,
    describe_settings,
    resolve_settings,
    settings_markdown,
)
from bertserve.training.commands import add_commands as add_training_commands
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


def _build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="bertserve", description="gRPC server for one shared BERT encoder with task heads"
    )
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser(
        "serve",
        help="run the server",
        description="Run the server. Settings: flag > BERTSERVE_* environment > --config TOML file > default.",
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

    _add_client_commands(commands)
    add_training_commands(commands)
    return parser


def _add_client_commands(commands: Any) -> None:
    """The subcommands that call a running server through the Python client."""
    for name, help_text, handler, positionals in [
        ("info", "describe a running server's encoder and heads", _info, []),
        ("fill-mask", "predict the masked words of a text", _fill_mask, ["text"]),
        ("next-sentence", "probability that SECOND follows FIRST", _next_sentence, ["first", "second"]),
        ("sentiment", "classify the sentiment of a text", _sentiment, ["text"]),
        ("answer", "answer QUESTION from CONTEXT", _answer, ["question", "context"]),
        ("predict", "run any head on a JSON input", _predict, ["head", "input"]),
        ("analyze", "run several heads on one text in one encoder pass", _analyze, ["text"]),
    ]:
        sub = commands.add_parser(name, help=help_text)
        for positional in positionals:
            sub.add_argument(positional)
        sub.add_argument("--target", default=f"localhost:{DEFAULT_PORT}", help="server address (host:port)")
        sub.add_argument("--timeout", type=float, default=30.0, help="seconds")
        sub.add_argument("--json", action="store_true", help="print JSON")
        sub.set_defaults(handler=handler, log_level="WARNING")
    commands.choices["fill-mask"].add_argument(
        "--top-k", type=int, default=None, help=f"candidates per mask (default {_task_default(FillMaskInput, 'top_k')})"
    )
    commands.choices["fill-mask"].add_argument("--targets", nargs="+", default=None, help="only score these words")
    commands.choices["answer"].add_argument(
        "--top-k", type=int, default=None, help=f"answers (default {_task_default(QuestionAnsweringInput, 'top_k')})"
    )
    commands.choices["analyze"].add_argument("--heads", nargs="+", required=True, help="head names")
    commands.choices["analyze"].add_argument("--text-pair", default=None, help="second text, for pair heads")
    for name in ("fill-mask", "next-sentence", "sentiment"):
        commands.choices[name].add_argument("--truncate", action="store_true", help="cut over-long input")


def _resolve(args: argparse.Namespace) -> tuple[ResolvedSettings, ServerConfig]:
    """The settings from every source and the config they make; a bad value exits naming it."""
    try:
        resolved = resolve_settings(args, os.environ)
        return resolved, resolved.to_config()
    except ConfigError as error:
        raise SystemExit(f"configuration error: {error}") from None


def _config(args: argparse.Namespace) -> ServerConfig:
    return _resolve(args)[1]


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


def _client(args: argparse.Namespace) -> Any:
    from bertserve_client import BertServeClient

    return BertServeClient(args.target, timeout=args.timeout)


def _run_client_call(args: argparse.Namespace, call: Any) -> int:
    from bertserve_client import BertServeError

    try:
        with _client(args) as client:
            result = call(client)
    except BertServeError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
        for violation in error.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return 1
    if args.json:
        print(json.dumps(to_json(result), indent=2))
    else:
        print(_render(result))
    return 0


def _info(args: argparse.Namespace) -> int:
    return _run_client_call(args, lambda client: {"server": client.server_info(), "heads": client.list_heads()})


def _fill_mask(args: argparse.Namespace) -> int:
    return _run_client_call(
        args, lambda c: c.fill_mask(args.text, top_k=args.top_k, targets=args.targets, truncate=args.truncate)
    )


def _next_sentence(args: argparse.Namespace) -> int:
    return _run_client_call(args, lambda c: c.next_sentence(args.first, args.second, truncate=args.truncate))


def _sentiment(args: argparse.Namespace) -> int:
    return _run_client_call(args, lambda c: c.sentiment(args.text, truncate=args.truncate))


def _answer(args: argparse.Namespace) -> int:
    return _run_client_call(args, lambda c: c.answer(args.question, args.context, top_k=args.top_k))


def _predict(args: argparse.Namespace) -> int:
    try:
        data = json.loads(args.input)
    except json.JSONDecodeError as error:
        print(f"error: INPUT must be a JSON object: {error}", file=sys.stderr)
        return 2
    args.json = True
    return _run_client_call(args, lambda c: c.predict(args.head, data))


def _analyze(args: argparse.Namespace) -> int:
    text = (args.text, args.text_pair) if args.text_pair else args.text
    args.json = True
    return _run_client_call(args, lambda c: _analyzed(c.analyze([text], args.heads)[0]))


def _analyzed(outputs: dict[str, Any]) -> dict[str, Any]:
    """Analyze outputs for JSON: a head that failed on the text shows its error in place."""
    from bertserve_client import HeadOutputError

    return {
        head: {"error": {"code": out.code.name, "message": out.message, "reason": out.reason, "field": out.field}}
        if isinstance(out, HeadOutputError)
        else out
        for head, out in outputs.items()
    }


def _task_default(task_input: type, name: str) -> object:
    """The default of a task input's field: the one place it is written (`bertserve.plugin.tasks`)."""
    return next(f.default for f in dataclasses.fields(task_input) if f.name == name)


def _render(result: Any) -> str:
    """Readable text for the client subcommands' results."""
    from bertserve_client import AnswerResult, FillMaskResult, NextSentenceResult, SentimentResult

    lines: list[str] = []
    if isinstance(result, FillMaskResult):
        for number, mask in enumerate(result.masks, 1):
            lines.append(f"mask {number} (token {mask.token_index}):")
            lines += [f"  {p.score:8.4f}  {p.token:<15} {p.sequence}" for p in mask.predictions]
    elif isinstance(result, NextSentenceResult):
        verdict = "follows" if result.is_next else "does not follow"
        lines.append(f"{verdict} (P(is next) = {result.is_next_probability:.4f})")
    elif isinstance(result, SentimentResult):
        lines.append(f"{result.label} ({result.score:.4f})")
        lines += [f"  {s.label:<15} {s.score:.4f}" for s in result.scores]
    elif isinstance(result, AnswerResult):
        for answer in result.answers:
            text = "(no answer)" if answer.no_answer else repr(answer.text)
            lines.append(f"{answer.score:8.4f}  {text}  [{answer.start}:{answer.end}]")
        if not result.answers:
            lines.append("(no answer)")
    else:
        lines.append(json.dumps(to_json(result), indent=2))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
