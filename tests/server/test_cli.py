"""The bertserve command: `heads` and the client subcommands against a running server."""

from __future__ import annotations

import json
import subprocess
import sys

from bertserve.background import BackgroundServer
from bertserve.cli import main
from bertserve.plugin.tasks import FillMaskInput


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "bertserve.cli", *args], capture_output=True, text=True, timeout=120)


def test_heads_lists_what_loads_and_why_not(tiny_checkpoint, head_files) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "heads", "--model", str(tiny_checkpoint), "--head-file", f"sentiment={head_files['sentiment']}", "--json"
    )
    assert result.returncode == 0, result.stderr
    heads = {h["name"]: h for h in json.loads(result.stdout)["heads"]}
    assert heads["sentiment"]["state"] == "loaded" and heads["fill-mask"]["state"] == "loaded"
    assert heads["question-answering"]["state"] == "unavailable"
    assert "--head-file question-answering=" in heads["question-answering"]["reason"]


def test_client_subcommands_print_readable_results(server: BackgroundServer, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["fill-mask", "the [MASK] was good .", "--top-k", "3", "--target", server.address]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mask 1 (token 2):") and len(out.strip().splitlines()) == 4
    assert main(["fill-mask", "the [MASK] was good .", "--target", server.address]) == 0
    default_top_k = FillMaskInput.__dataclass_fields__["top_k"].default  # the task's default, left to the server
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + default_top_k
    assert main(["sentiment", "a great movie", "--target", server.address, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] in {"negative", "neutral", "positive"} and len(result["scores"]) == 3
    assert main(["next-sentence", "john went home .", "he slept .", "--target", server.address]) == 0
    assert "P(is next)" in capsys.readouterr().out
    assert main(["answer", "who went home ?", "john went home .", "--target", server.address]) == 0
    assert "[" in capsys.readouterr().out


def test_client_subcommand_reports_errors_with_the_field(server: BackgroundServer, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["fill-mask", "no mask at all", "--target", server.address]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "texts[0]" in err


def test_generic_subcommands_print_json(server: BackgroundServer, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["predict", "sentiment", '{"text": "a great movie"}', "--target", server.address]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in {"negative", "neutral", "positive"}
    assert (
        main(["analyze", "the [MASK] was great", "--heads", "sentiment", "fill-mask", "--target", server.address]) == 0
    )
    assert set(json.loads(capsys.readouterr().out)) == {"sentiment", "fill-mask"}
    assert main(["analyze", "no mask", "--heads", "sentiment", "fill-mask", "--target", server.address]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sentiment"]["label"] and printed["fill-mask"]["error"]["code"] == "INVALID_ARGUMENT"
    assert printed["fill-mask"]["error"]["field"] == "inputs[0]"
    assert main(["predict", "sentiment", "not json", "--target", server.address]) == 2
    assert main(["predict", "sentiment", '{"txt": "x"}', "--target", server.address]) == 1
    assert "input.txt" in capsys.readouterr().err
