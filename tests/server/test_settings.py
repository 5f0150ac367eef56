"""Configuration: TOML file, BERTSERVE_* environment and flags, their precedence, and every validation error."""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from bertserve.cli import main
from bertserve.config import BatchingConfig, MetricsConfig, ServerConfig
from bertserve.settings import SETTINGS, ConfigError, add_setting_flags, config_from_sources, resolve_settings
from bertserve.settings_table import CONFIG_DEFAULTS, SETTINGS_BY_FIELD, settings_markdown

README = Path(__file__).resolve().parents[2] / "README.md"


def flags(*argv: str) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    return parser.parse_args(list(argv))


def write(tmp_path: Path, text: str, name: str = "bertserve.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_defaults_without_any_source() -> None:
    config = config_from_sources(flags(), {})
    assert config.port == 50051 and config.host == "127.0.0.1"
    assert config.batching.max_batch_size == 32
    assert config.metrics.port is None and config.metrics.host == "127.0.0.1"  # metrics off
    assert config.max_connection_age_seconds == 300.0
    assert config.model is None and config.head_files == {}
    assert config.logging.format == "plain" and config.warmup is True


def test_serve_defaults_are_the_defaults_of_a_config_built_in_code() -> None:
    assert config_from_sources(flags(), {}) == ServerConfig()
    assert resolve_settings({}, {}).to_config() == ServerConfig()


def _config_fields(cls: type, prefix: str = "") -> dict[str, dataclasses.Field[Any]]:
    """Every leaf attribute of a config dataclass, by dotted path."""
    fields: dict[str, dataclasses.Field[Any]] = {}
    for item in dataclasses.fields(cls):
        nested = item.default_factory if item.default_factory is not dataclasses.MISSING else None
        if isinstance(nested, type) and dataclasses.is_dataclass(nested):
            fields.update(_config_fields(nested, f"{prefix}{item.name}."))
        else:
            fields[prefix + item.name] = item
    return fields


def test_every_config_attribute_is_one_setting_and_takes_its_default_from_the_table() -> None:
    fields = _config_fields(ServerConfig)
    assert set(fields) - set(SETTINGS_BY_FIELD) == {"plugin_entry_point_group"}  # the one attribute set only in code
    assert set(SETTINGS_BY_FIELD) <= set(fields)
    paths = [setting.config_path for setting in SETTINGS if setting.config_path is not None]
    assert len(paths) == len(set(paths))
    for path, setting in SETTINGS_BY_FIELD.items():
        item = fields[path]
        default = item.default_factory() if item.default_factory is not dataclasses.MISSING else item.default
        assert default == CONFIG_DEFAULTS[path], path  # a default typed into config.py would differ from the table
        assert item.repr is not setting.secret, path


def test_a_metrics_port_turns_metrics_on_unless_they_are_switched_off() -> None:
    assert config_from_sources(flags(), {}).metrics.port is None
    assert config_from_sources(flags("--metrics"), {}).metrics.port == 9090
    resolved = resolve_settings(flags("--metrics-port", "9100"), {})
    assert resolved.to_config().metrics.port == 9100
    assert resolved.sources["metrics.enabled"] == "implied by metrics.port (flag --metrics-port)"
    assert config_from_sources(flags(), {"BERTSERVE_METRICS_PORT": "0"}).metrics.port == 0
    assert config_from_sources(flags("--no-metrics", "--metrics-port", "9100"), {}).metrics.port is None
    assert config_from_sources(flags("--metrics-host", "0.0.0.0"), {}).metrics.port is None  # only the port implies it


def test_config_objects_check_the_tables_minimums() -> None:
    with pytest.raises(
        ValueError, match=r"max_batch_size must be at least 1, got 0 \(setting batching.max_batch_size\)"
    ):
        BatchingConfig(max_batch_size=0)
    with pytest.raises(ValueError, match="max_delay_ms must be at least 0"):
        BatchingConfig(max_delay_ms=-1.0)
    with pytest.raises(ValueError, match=r"max_message_bytes must be at least 1024.*limits.max_message_bytes"):
        ServerConfig(max_message_bytes=10)
    with pytest.raises(ValueError, match="port must be at least 0"):
        MetricsConfig(port=-1)
    assert ServerConfig(port=0, health_port=0, max_sequence_length=None).health_port == 0


def test_precedence_flag_over_env_over_file_over_default(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[server]
port = 7001
worker_threads = 3
[batching]
max_batch_size = 8
max_delay_ms = 2.5
[logging]
format = "json"
""",
    )
    env = {"BERTSERVE_SERVER_PORT": "7002", "BERTSERVE_BATCHING_MAX_BATCH_SIZE": "16"}
    resolved = resolve_settings(flags("--config", str(path), "--port", "7003"), env)
    config = resolved.to_config()
    assert config.port == 7003  # flag beats env and file
    assert config.batching.max_batch_size == 16  # env beats file
    assert config.worker_threads == 3 and config.batching.max_delay_ms == 2.5  # file beats default
    assert config.logging.format == "json"
    assert config.batching.max_batch_tokens == 16384  # default
    assert resolved.sources["server.port"] == "flag --port"
    assert resolved.sources["batching.max_batch_size"] == "env BERTSERVE_BATCHING_MAX_BATCH_SIZE"
    assert resolved.sources["server.worker_threads"] == f"file {path}"
    assert resolved.sources["batching.max_batch_tokens"] == "default"


def test_config_file_from_environment_variable(tmp_path: Path) -> None:
    path = write(tmp_path, "[limits]\nmax_inputs_per_request = 7\n")
    assert config_from_sources(flags(), {"BERTSERVE_CONFIG": str(path)}).max_inputs_per_request == 7


def test_every_kind_of_value_from_each_source(tmp_path: Path) -> None:
    heads = tmp_path / "sentiment.safetensors"
    heads.write_bytes(b"x")
    qa = tmp_path / "qa.safetensors"
    qa.write_bytes(b"x")
    path = write(
        tmp_path,
        f"""
[model]
name = "/models/bert"
head_files = {{ sentiment = "{heads}" }}
max_sequence_length = 128
[plugins]
allow = ["bertserve", "acme"]
[server]
warmup = false
[metrics]
enabled = false
""",
    )
    config = config_from_sources(flags("--config", str(path)), {})
    assert config.model == "/models/bert" and config.head_files == {"sentiment": heads}
    assert config.max_sequence_length == 128 and config.plugins_allow == ("bertserve", "acme")
    assert config.warmup is False and config.metrics.port is None

    env = {
        "BERTSERVE_MODEL_HEAD_FILES": f"sentiment={heads},question-answering={qa}",
        "BERTSERVE_PLUGINS_DENY": "acme, other",
        "BERTSERVE_SERVER_WARMUP": "yes",
        "BERTSERVE_MODEL_MAX_SEQUENCE_LENGTH": "none",
        "BERTSERVE_SERVER_MAX_CONNECTION_AGE_SECONDS": "20.5",
        "BERTSERVE_LOGGING_LEVEL": "debug",
    }
    config = config_from_sources(flags(), env)
    assert config.head_files == {"sentiment": heads, "question-answering": qa}
    assert config.plugins_deny == ("acme", "other") and config.warmup is True
    assert config.max_sequence_length is None and config.max_connection_age_seconds == 20.5
    assert config.logging.level == "DEBUG"

    config = config_from_sources(
        flags("--head-file", f"sentiment={heads}", "--no-warmup", "--no-metrics", "--log-format", "json"), env
    )
    assert config.head_files == {"sentiment": heads}  # the flag replaces the environment's table
    assert config.warmup is False and config.metrics.port is None and config.logging.format == "json"


@pytest.mark.parametrize(
    ("toml", "env", "argv", "message"),
    [
        ("[server]\nprot = 1\n", {}, [], "unknown key 'server.prot'; did you mean 'server.port'?"),
        ("[sever]\nport = 1\n", {}, [], "unknown section [sever]; did you mean 'server'?"),
        ("port = 1\n", {}, [], "unknown section [port]"),
        ("[server\n", {}, [], "is not valid TOML"),
        ('[server]\nport = "50051"\n', {}, [], "server.port must be an integer, got '50051'"),
        ("[server]\nport = 1.5\n", {}, [], "server.port must be an integer"),
        ("[server]\nport = -1\n", {}, [], "server.port must be at least 0"),
        ("[server]\nwarmup = 1\n", {}, [], "server.warmup must be true or false"),
        ("[batching]\nmax_batch_size = 0\n", {}, [], "batching.max_batch_size must be at least 1"),
        ('[model]\ndtype = "float64"\n', {}, [], "model.dtype must be one of auto, float32, float16, bfloat16"),
        ('[logging]\nformat = "xml"\n', {}, [], "logging.format must be one of plain, json"),
        ('[plugins]\nallow = "bertserve"\n', {}, [], "plugins.allow must be a list of non-empty strings"),
        ('[model]\nhead_files = ["a"]\n', {}, [], "model.head_files must be a table"),
        ("", {"BERTSERVE_BATCHING_MAX_BATCH_SIZE": "many"}, [], "environment BERTSERVE_BATCHING_MAX_BATCH_SIZE"),
        ("", {"BERTSERVE_SERVER_WARMUP": "maybe"}, [], "server.warmup must be true or false, got 'maybe'"),
        ("", {"BERTSERVE_MODEL_HEAD_FILES": "sentiment"}, [], "model.head_files expects HEAD=PATH"),
        ("", {}, ["--max-delay-ms", "-1"], "flag --max-delay-ms: batching.max_delay_ms must be at least 0"),
        ("", {}, ["--head-file", "nope=/missing"], "the file for head 'nope', /missing, not found"),
        ("", {}, ["--metrics-port", "50051"], "metrics.port and server.port are both 50051"),
        ("", {}, ["--tls-cert", "/x.pem"], "security.tls_cert"),
        ("", {}, ["--metrics-require-token"], "security.metrics_require_token is set but no token"),
        ("", {"BERTSERVE_SECURITY_TOKENS": "a1,a1"}, [], "security.tokens: entry 2 repeats the token"),
        ("", {}, ["--tokens-file", "/no/such/tokens"], "security.tokens_file"),
    ],
)
def test_validation_errors_name_the_key(
    tmp_path: Path, toml: str, env: dict[str, str], argv: list[str], message: str
) -> None:
    arguments = [*argv, "--config", str(write(tmp_path, toml))] if toml else argv
    with pytest.raises(ConfigError) as raised:
        config_from_sources(flags(*arguments), env)
    assert message in str(raised.value)


def test_missing_config_file() -> None:
    with pytest.raises(ConfigError, match="config file /no/such.toml not found"):
        config_from_sources(flags("--config", "/no/such.toml"), {})


def test_secret_values_never_appear_in_errors_or_show(tmp_path: Path) -> None:
    resolved = resolve_settings(flags(), {"BERTSERVE_SECURITY_TOKENS": "s3cret-token-1,s3cret-token-2"})
    shown = resolved.show()
    assert "s3cret" not in shown and 'tokens = ["********", "********"]' in shown
    with pytest.raises(ConfigError) as raised:
        config_from_sources(flags(), {"BERTSERVE_SECURITY_TOKENS": "s3cret,s3cret"})
    assert "s3cret" not in str(raised.value)
    assert not any(setting.key == "security.tokens" for setting in SETTINGS if setting.flag)  # no flag for it
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)
    assert "--tokens" not in parser._option_string_actions  # command lines are visible to every user


def test_show_round_trips_as_toml(tmp_path: Path) -> None:
    """`config show` output is itself a valid config file giving the same configuration."""
    resolved = resolve_settings(flags("--port", "6000", "--max-batch-size", "4"), {"BERTSERVE_LOGGING_FORMAT": "json"})
    again = write(tmp_path, resolved.show())
    assert config_from_sources(flags("--config", str(again)), {}) == resolved.to_config()


def test_every_setting_has_a_distinct_env_and_flag() -> None:
    envs = [setting.env for setting in SETTINGS]
    options = [setting.option for setting in SETTINGS]
    assert len(set(envs)) == len(envs) and len(set(options)) == len(options)
    parser = argparse.ArgumentParser()
    add_setting_flags(parser)  # argparse itself refuses duplicate options


def test_config_show_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[server]\nport = 7100\n")
    assert main(["config", "show", "--config", str(path), "--max-batch-size", "12"]) == 0
    out = capsys.readouterr().out
    assert "port = 7100" in out and f"# file {path}" in out
    assert "max_batch_size = 12" in out and "# flag --max-batch-size" in out


def test_serve_with_a_bad_setting_exits_with_the_message() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "bertserve", "serve", "--max-batch-size", "0"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode != 0
    assert "configuration error" in done.stderr and "batching.max_batch_size must be at least 1" in done.stderr


def test_readme_documents_every_setting() -> None:
    readme = README.read_text()
    for setting in SETTINGS:
        assert f"| `{setting.key}` | `{setting.env}` |" in readme, setting.key


def test_readme_settings_table_is_what_the_generator_prints(capsys: pytest.CaptureFixture[str]) -> None:
    """Regenerate with `bertserve config docs` and paste between the README's settings-table markers."""
    lines = README.read_text().splitlines(keepends=True)
    begin = next(i for i, line in enumerate(lines) if line.startswith("<!-- settings table: generated by"))
    end = next(i for i, line in enumerate(lines) if line.startswith("<!-- end of settings table -->"))
    assert "".join(lines[begin + 1 : end]) == settings_markdown(), (
        "README settings table is stale: bertserve config docs"
    )
    assert main(["config", "docs"]) == 0
    assert capsys.readouterr().out == settings_markdown()


def test_config_docs_json(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["config", "docs", "--json"]) == 0
    described = {entry["key"]: entry for entry in json.loads(capsys.readouterr().out)}
    assert list(described) == [setting.key for setting in SETTINGS]
    assert described["batching.max_batch_size"]["minimum"] == 1 and described["security.tokens"]["flag"] is None
    assert described["model.dtype"]["choices"][0] == "auto" and described["model.name"]["field"] == "model"


def test_unknown_environment_variables_are_warnings(caplog: pytest.LogCaptureFixture) -> None:
    """Kubernetes service links inject BERTSERVE_SERVICE_HOST and such: start anyway, but say so."""
    env = {"BERTSERVE_SERVER_PORTT": "1", "BERTSERVE_SERVICE_HOST": "10.0.0.1", "BERTSERVE_SERVER_PORT": "6001"}
    with caplog.at_level("WARNING", logger="bertserve.settings"):
        config = config_from_sources(flags(), env)
    assert config.port == 6001
    messages = [record.getMessage() for record in caplog.records]
    assert any("BERTSERVE_SERVER_PORTT" in m and "did you mean 'BERTSERVE_SERVER_PORT'" in m for m in messages)
    assert any("BERTSERVE_SERVICE_HOST: no such setting" in m for m in messages)
