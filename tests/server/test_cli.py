"""The bertserve command: `heads` and the client subcommands against a running server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import metadata

import pytest
from bertserve.background import BackgroundServer
from bertserve.cli import main
from bertserve.plugin.tasks import FillMaskInput
from bertserve.settings_table import SETTINGS


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
    assert main(["fill-mask", "the [MASK] was good .", "--top-k", "3", "--address", server.address]) == 0
    out = capsys.readouterr().out
    assert out.startswith("mask 1 (token 2):") and len(out.strip().splitlines()) == 4
    assert main(["fill-mask", "the [MASK] was good .", "--address", server.address]) == 0
    default_top_k = FillMaskInput.__dataclass_fields__["top_k"].default  # the task's default, left to the server
    assert len(capsys.readouterr().out.strip().splitlines()) == 1 + default_top_k
    assert main(["sentiment", "a great movie", "--address", server.address, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["label"] in {"negative", "neutral", "positive"} and len(result["scores"]) == 3
    assert main(["next-sentence", "john went home .", "he slept .", "--address", server.address]) == 0
    assert "P(is next)" in capsys.readouterr().out
    assert main(["answer", "who went home ?", "john went home .", "--address", server.address]) == 0
    assert "(UTF-8 bytes [" in capsys.readouterr().out


def test_client_subcommand_reports_errors_with_the_field(server: BackgroundServer, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["fill-mask", "no mask at all", "--address", server.address]) == 1
    err = capsys.readouterr().err
    assert "INVALID_ARGUMENT" in err and "texts[0]" in err


def test_generic_subcommands_print_json(server: BackgroundServer, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["predict", "sentiment", '{"text": "a great movie"}', "--address", server.address]) == 0
    assert json.loads(capsys.readouterr().out)["label"] in {"negative", "neutral", "positive"}
    assert (
        main(["analyze", "the [MASK] was great", "--heads", "sentiment", "fill-mask", "--address", server.address]) == 0
    )
    assert set(json.loads(capsys.readouterr().out)) == {"sentiment", "fill-mask"}
    assert main(["analyze", "no mask", "--heads", "sentiment", "fill-mask", "--address", server.address]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["sentiment"]["label"] and printed["fill-mask"]["error"]["code"] == "INVALID_ARGUMENT"
    assert printed["fill-mask"]["error"]["field"] == "inputs[0]"
    assert main(["predict", "sentiment", "not json", "--address", server.address]) == 2
    assert main(["predict", "sentiment", '{"txt": "x"}', "--address", server.address]) == 1
    assert "input.txt" in capsys.readouterr().err


def test_version_names_the_server_and_what_it_runs_with() -> None:
    result = run_cli("--version")
    assert result.returncode == 0, result.stderr
    first, components = result.stdout.splitlines()
    assert first == f"bertserve {metadata.version('bertserve')}"
    for name in ("bertserve-client", "torch", "transformers", "grpcio", "protobuf"):
        assert f"{name} {metadata.version(name)}" in components


def test_serve_help_shows_every_default() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "bertserve.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, "COLUMNS": "1000"},  # one line per flag
    )
    lines: dict[str, str] = {}  # flag -> its help, the lines after it joined (long flags put help below)
    for line in result.stdout.splitlines():
        if line.startswith("  --"):
            flag = line.split()[0]
            lines[flag] = line
        elif line.startswith("      ") and lines:
            lines[flag] += " " + line.strip()
    flagged = [setting for setting in SETTINGS if setting.has_flag]
    assert len(flagged) > 30
    for setting in flagged:
        line = lines[setting.option if setting.kind != "bool" else f"{setting.option},"]
        assert "default" in line, line
        assert setting.env in line and setting.key in line
    assert "(default: 50051)" in lines["--port"] and "(default: 32)" in lines["--max-batch-size"]
    assert "(default: false)" in lines["--reuse-port,"] and "(default: unset)" in lines["--health-port"]
    # The variables it reads besides its settings, and what every answer carries.
    for name in ("HF_TOKEN", "HF_HUB_CACHE", "HF_HUB_OFFLINE", "OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        assert name in result.stdout
    assert "x-queue-time" in result.stdout and "x-inference-time" in result.stdout


def test_abbreviated_flags_are_refused(capsys) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(SystemExit) as exit_:
        main(["serve", "--tokens", "t.txt"])  # not --tokens-file
    assert exit_.value.code == 2 and "--tokens" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["fill-mask", "a [MASK] .", "--target", "x", "--addr", "localhost:1"])


def test_the_address_flag_does_not_read_like_fill_masks_targets(server: BackgroundServer, capsys) -> None:  # type: ignore[no-untyped-def]
    assert main(["fill-mask", "the [MASK] was good .", "--address", server.address, "--targets", "film", "--json"]) == 0
    predictions = json.loads(capsys.readouterr().out)["masks"][0]["predictions"]
    assert [p["token"] for p in predictions] == ["film"]
    help_text = subprocess.run(
        [sys.executable, "-m", "bertserve.cli", "fill-mask", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--address" in help_text and "--target " not in help_text and "--target\n" not in help_text
    # The old name still works, with a warning.
    assert main(["sentiment", "a great movie", "--target", server.address]) == 0
    assert "--target is now --address" in capsys.readouterr().err
