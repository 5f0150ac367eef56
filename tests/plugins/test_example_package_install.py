"""The example plugin package, pip-installed into an environment, is served with no server change;
uninstalled or denied, it is gone."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from bertserve_client import BertServeClient, NotFoundError

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE_HEADS = {"sentence-embedding", "token-classification"}


@pytest.fixture(scope="module")
def plugin_env(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment that sees this one's packages plus the installed example package."""
    venv = tmp_path_factory.mktemp("plugin-env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    purelib = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    child_site = subprocess.run([str(python), "-c", purelib], capture_output=True, text=True, check=True).stdout.strip()
    # Make this environment's packages (bertserve, torch, ...) visible there, .pth files included.
    parent_sites = [p for p in sys.path if p.endswith("site-packages")]
    lines = "".join(f"import site; site.addsitedir({p!r})\n" for p in parent_sites)
    Path(child_site, "parent_env.pth").write_text(lines)
    # Build from a copy: a build writes metadata beside the sources.
    source = shutil.copytree(ROOT / "plugins/examples", venv.parent / "example-package")
    install = [str(python), "-m", "pip", "install", "--quiet", "--no-deps", str(source)]
    subprocess.run(install, check=True, timeout=300)
    return python


def heads_listing(python: Path | str, model: Path, **env: str) -> dict[str, dict[str, str]]:
    result = subprocess.run(
        [str(python), "-m", "bertserve.cli", "heads", "--model", str(model), "--json"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, **env},
    )
    assert result.returncode == 0, result.stderr
    return {head["name"]: head for head in json.loads(result.stdout)["heads"]}


def test_installed_package_is_discovered_with_its_source(plugin_env: Path, tiny_checkpoint: Path) -> None:
    heads = heads_listing(plugin_env, tiny_checkpoint)
    assert EXAMPLE_HEADS <= set(heads)
    embedding = heads["sentence-embedding"]
    assert (embedding["package"], embedding["version"], embedding["state"]) == (
        "bertserve-example-heads",
        "0.1.0",
        "loaded",
    )
    assert heads["token-classification"]["state"] == "unavailable"  # no head file given
    assert "--head-file token-classification=" in heads["token-classification"]["reason"]


def test_without_the_package_the_heads_are_absent(tiny_checkpoint: Path) -> None:
    assert not EXAMPLE_HEADS & set(heads_listing(sys.executable, tiny_checkpoint))


def test_denied_package_is_gone(plugin_env: Path, tiny_checkpoint: Path) -> None:
    heads = heads_listing(plugin_env, tiny_checkpoint, BERTSERVE_PLUGINS_DENY="bertserve-example-heads")
    assert not EXAMPLE_HEADS & set(heads) and "sentiment" in heads


@pytest.fixture
def served_in_plugin_env(plugin_env: Path, tiny_checkpoint: Path) -> Iterator[str]:
    """`bertserve serve` run from the plugin environment on a free port."""
    process = subprocess.Popen(
        [
            str(plugin_env),
            "-m",
            "bertserve.cli",
            "serve",
            "--model",
            str(tiny_checkpoint),
            "--host",
            "127.0.0.1",
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        address = None
        deadline = time.monotonic() + 60
        assert process.stdout is not None
        while address is None and time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            if match := re.search(r"listening on (\S+):(\d+)", line):
                address = f"127.0.0.1:{match.group(2)}"
        assert address, "the server did not report its port"
        yield address
    finally:
        process.terminate()
        process.wait(timeout=30)


def test_installed_head_answers_predict_and_analyze(served_in_plugin_env: str) -> None:
    with BertServeClient(served_in_plugin_env, timeout=30) as client:
        client.wait_until_ready(timeout=60)
        output = client.predict("sentence-embedding", {"text": "john went [MASK]"})
        assert output["dimensions"] == 32 and len(output["embedding"]) == 32
        assert abs(sum(v * v for v in output["embedding"]) - 1.0) < 1e-4  # normalised by default
        both = client.analyze("john went [MASK]", ["sentence-embedding", "fill-mask"])  # one encoder pass
        assert both["sentence-embedding"]["embedding"] == pytest.approx(output["embedding"], abs=1e-5)
        assert len(both["fill-mask"]["masks"][0]["predictions"]) == 5
        with pytest.raises(NotFoundError):
            client.predict("no-such-head", {"text": "x"})
