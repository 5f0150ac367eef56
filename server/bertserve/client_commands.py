"""The subcommands that call a running server through the Python client (`info`, `fill-mask`, ...).

They take the Python client's connection options under the same names:
``--address`` (the client's target), ``--tls``, ``--root-certificates``,
``--client-certificate`` and ``--client-key`` (mutual TLS),
``--server-name``, and a bearer token from ``--token-file`` or
``$BERTSERVE_TOKEN`` (never a flag: command lines are visible to every user
of the machine). ``$BERTSERVE_ADDRESS`` sets the default address.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from bertserve.config import DEFAULT_PORT
from bertserve.plugin.schema import to_json
from bertserve.plugin.tasks import FillMaskInput, QuestionAnsweringInput

ADDRESS_VARIABLE = "BERTSERVE_ADDRESS"
TOKEN_VARIABLE = "BERTSERVE_TOKEN"
CLIENT_VARIABLES = (ADDRESS_VARIABLE, TOKEN_VARIABLE)
DEFAULT_ADDRESS = f"localhost:{DEFAULT_PORT}"


def add_commands(commands: Any) -> None:
    """Register the client subcommands on the CLI's subcommands."""
    for name, help_text, handler, positionals in [
        ("info", "describe a running server's encoder and heads", _info, []),
        ("fill-mask", "predict the masked words of a text", _fill_mask, ["text"]),
        ("next-sentence", "probability that SECOND follows FIRST", _next_sentence, ["first", "second"]),
        ("sentiment", "classify the sentiment of a text", _sentiment, ["text"]),
        ("answer", "answer QUESTION from CONTEXT", _answer, ["question", "context"]),
        ("predict", "run any head on a JSON input", _predict, ["head", "input"]),
        ("analyze", "run several heads on one text in one encoder pass", _analyze, ["text"]),
    ]:
        sub = commands.add_parser(name, help=help_text, description=f"{help_text[0].upper()}{help_text[1:]}.")
        for positional in positionals:
            sub.add_argument(positional)
        sub.add_argument("--json", action="store_true", help="print JSON")
        add_connection_options(sub)
        sub.set_defaults(handler=handler, log_level="WARNING")
    fill_mask = commands.choices["fill-mask"]
    top_k = _task_default(FillMaskInput, "top_k")
    fill_mask.add_argument("--top-k", type=int, default=None, help=f"candidates per mask (default: {top_k})")
    fill_mask.add_argument(
        "--targets", nargs="+", default=None, metavar="WORD", help="only score these words (default: every word)"
    )
    commands.choices["answer"].add_argument(
        "--top-k", type=int, default=None, help=f"answers (default: {_task_default(QuestionAnsweringInput, 'top_k')})"
    )
    commands.choices["analyze"].add_argument("--heads", nargs="+", required=True, help="head names")
    commands.choices["analyze"].add_argument(
        "--text-pair", default=None, help="second text, for pair heads (default: none)"
    )
    for name in ("fill-mask", "next-sentence", "sentiment"):
        commands.choices[name].add_argument("--truncate", action="store_true", help="cut over-long input")


def add_connection_options(parser: argparse.ArgumentParser) -> None:
    """The Python client's connection options, as flags with the client's names."""
    group = parser.add_argument_group("connection (the Python client's options)")
    group.add_argument(
        "--address",
        default=None,
        help=f"server address: host:port, or dns:///name:port (default: ${ADDRESS_VARIABLE} or {DEFAULT_ADDRESS})",
    )
    # The flag's old name, which read like fill-mask's --targets: still accepted, not shown.
    group.add_argument("--target", dest="old_target", default=None, help=argparse.SUPPRESS)
    group.add_argument("--timeout", type=float, default=30.0, help="seconds per call (default: 30)")
    group.add_argument("--tls", action="store_true", help="TLS with the system's root certificates (default: off)")
    group.add_argument(
        "--root-certificates", type=Path, default=None, metavar="PEM", help="CA to trust; turns TLS on (default: unset)"
    )
    group.add_argument(
        "--client-certificate", type=Path, default=None, metavar="PEM", help="for mutual TLS (default: unset)"
    )
    group.add_argument("--client-key", type=Path, default=None, metavar="PEM", help="its private key (default: unset)")
    group.add_argument(
        "--server-name", default=None, help="name the server certificate must carry (default: the address's host)"
    )
    group.add_argument(
        "--token-file",
        type=Path,
        default=None,
        metavar="PATH",
        help=f"file holding the bearer token (default: ${TOKEN_VARIABLE}, else no token)",
    )


def client_options(args: argparse.Namespace, environ: Mapping[str, str]) -> dict[str, Any]:
    """The keyword arguments of `BertServeClient` that the connection flags and variables ask for."""
    if args.old_target is not None:
        print("warning: --target is now --address", file=sys.stderr)
    token = environ.get(TOKEN_VARIABLE) or None
    if args.token_file is not None:
        token = args.token_file.read_text(encoding="utf-8").strip()
    return {
        "target": args.address or args.old_target or environ.get(ADDRESS_VARIABLE) or DEFAULT_ADDRESS,
        "timeout": args.timeout,
        "tls": args.tls,
        "root_certificates": args.root_certificates,
        "client_certificate": args.client_certificate,
        "client_key": args.client_key,
        "server_name": args.server_name,
        "token": token,
    }


def _run_client_call(args: argparse.Namespace, call: Any) -> int:
    from bertserve_client import BertServeClient, BertServeError

    try:
        with BertServeClient(**client_options(args, os.environ)) as client:
            result = call(client)
    except BertServeError as error:
        print(f"error: {error.code.name}: {error.message}", file=sys.stderr)
        for violation in error.field_violations:
            print(f"  {violation.field}: {violation.description}", file=sys.stderr)
        return 1
    except (OSError, ValueError) as error:  # an unreadable PEM or token file, a malformed token
        print(f"error: {error}", file=sys.stderr)
        return 2
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
            offsets = f"[{answer.start}:{answer.end}] (UTF-8 bytes [{answer.start_byte}:{answer.end_byte}])"
            lines.append(f"{answer.score:8.4f}  {text}  {offsets}")
        if not result.answers:
            lines.append("(no answer)")
    else:
        lines.append(json.dumps(to_json(result), indent=2))
    return "\n".join(lines)
