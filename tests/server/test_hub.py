"""Models from the hub: revision, cache folder, token, progress bar, `bertserve download`, offline use.

Nothing is downloaded from any real hub. A local folder laid out as the hub
cache (``models--ORG--NAME/{blobs,refs,snapshots}``) stands in for a cache
filled earlier, and a tiny HTTP server on 127.0.0.1 serving just enough of the
hub's HTTP API stands in for the hub (the hub library reads ``HF_ENDPOINT``
at import, so the commands run in subprocesses).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import pty
import re
import struct
import subprocess
import sys
import termios
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

import pytest
from bertserve.app import load_encoder
from bertserve.cli import main
from bertserve.config import LoggingConfig, ServerConfig, StartupError
from bertserve.model import hub
from bertserve.model.encoder import SharedEncoder
from tiny_models import make_checkpoint

REPO = "tiny-org/tiny-bert"
COMMIT_MAIN = "a" * 40
COMMIT_V2 = "b" * 40
FINGERPRINT = re.compile(r"fingerprint (sha256:[0-9a-f]+)")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two tiny checkpoints with different weights: what ``main`` and ``v2`` point at."""
    folder = tmp_path_factory.mktemp("hub-checkpoints")
    return {"main": make_checkpoint(folder / "main", seed=0), "v2": make_checkpoint(folder / "v2", seed=1)}


@pytest.fixture(scope="module")
def fingerprints(checkpoints: dict[str, Path]) -> dict[str, str]:
    return {name: SharedEncoder.load(str(path), device="cpu").fingerprint for name, path in checkpoints.items()}


def build_hub_cache(cache: Path, repo: str, snapshots: dict[str, Path], refs: dict[str, str]) -> Path:
    """Lay `snapshots` (commit -> checkpoint folder) out as the hub library's cache does, with `refs`."""
    storage = cache / ("models--" + repo.replace("/", "--"))
    for commit, source in snapshots.items():
        for file in source.iterdir():
            data = file.read_bytes()
            blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = storage / "snapshots" / commit / file.name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
    for name, commit in refs.items():
        (storage / "refs" / name).parent.mkdir(parents=True, exist_ok=True)
        (storage / "refs" / name).write_text(commit)
    return cache


@pytest.fixture(scope="module")
def hub_cache(checkpoints: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A hub cache holding REPO at two commits: ``main`` and the tag ``v2``."""
    snapshots = {COMMIT_MAIN: checkpoints["main"], COMMIT_V2: checkpoints["v2"]}
    return build_hub_cache(
        tmp_path_factory.mktemp("hub-cache"), REPO, snapshots, {"main": COMMIT_MAIN, "v2": COMMIT_V2}
    )


def command_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    """The environment of a bertserve subprocess: no BERTSERVE_/HF_ settings of this machine, a fresh HF_HOME."""
    cleared = ("BERTSERVE_", "HF_", "TRANSFORMERS_", "TQDM_")
    env = {key: value for key, value in os.environ.items() if not key.startswith(cleared)}
    return {**env, "HF_HOME": str(tmp_path / "hf-home"), **extra}


def bertserve(*args: str, env: dict[str, str], timeout: float = 120) -> subprocess.CompletedProcess[str]:
    command = [sys.executable, "-m", "bertserve", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout)


def one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Traceback" not in stderr, stderr
    return lines[0]


# --- which files serving reads ---------------------------------------------------------------------


def test_needed_files_take_config_tokenizer_and_one_set_of_weights_safetensors_first() -> None:
    repo = ["config.json", "model.safetensors", "pytorch_model.bin", "tf_model.h5", "vocab.txt", "README.md"]
    assert hub.needed_files(repo) == ["config.json", "vocab.txt", "model.safetensors"]
    sharded = ["config.json", "tokenizer.json", "model.safetensors.index.json", "pytorch_model.bin"]
    sharded += ["model-00002-of-00002.safetensors", "model-00001-of-00002.safetensors"]
    assert hub.needed_files(sharded) == [
        "config.json",
        "tokenizer.json",
        "model.safetensors.index.json",
        "model-00001-of-00002.safetensors",
        "model-00002-of-00002.safetensors",
    ]
    assert hub.needed_files(["config.json", "pytorch_model.bin"]) == ["config.json", "pytorch_model.bin"]
    with pytest.raises(hub.HubError, match="no weights"):
        hub.needed_files(["config.json", "tf_model.h5"])


# --- a cache filled earlier, offline ------------------------------------------------------------------


def test_load_encoder_reads_the_snapshot_of_the_revision_from_the_cache_dir(
    hub_cache: Path, fingerprints: dict[str, str]
) -> None:
    """Offline (conftest sets HF_HUB_OFFLINE=1): branch, tag and commit each select their own snapshot."""
    assert fingerprints["main"] != fingerprints["v2"]
    loaded = {
        revision: load_encoder(ServerConfig(model=REPO, revision=revision, cache_dir=hub_cache, device="cpu"))
        for revision in (None, "v2", COMMIT_MAIN)
    }
    assert loaded[None].fingerprint == fingerprints["main"]
    assert loaded["v2"].fingerprint == fingerprints["v2"]
    assert loaded[COMMIT_MAIN].fingerprint == fingerprints["main"]
    assert loaded["v2"].model_name == REPO


def test_heads_command_loads_the_revision_from_the_cache_dir_offline(
    hub_cache: Path, fingerprints: dict[str, str], tmp_path: Path
) -> None:
    args = ["heads", "--model", REPO, "--revision", "v2", "--model-cache-dir", str(hub_cache), "--device", "cpu"]
    result = bertserve(*args, env=command_env(tmp_path, HF_HUB_OFFLINE="1"))
    assert result.returncode == 0, result.stderr
    found = FINGERPRINT.search(result.stdout)
    assert found and found.group(1) == fingerprints["v2"], result.stdout


def test_a_model_neither_cached_nor_reachable_stops_start_up_in_one_line(
    hub_cache: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No hang, no traceback: one line naming the model, the cache and `bertserve download`."""
    config = ServerConfig(model="tiny-org/absent", cache_dir=hub_cache, device="cpu")
    with pytest.raises(StartupError, match=r"tiny-org/absent \(revision main\) is not in the hub cache .*HF_HUB_OFF"):
        load_encoder(config)
    with pytest.raises(StartupError, match="revision v3"):
        load_encoder(ServerConfig(model=REPO, revision="v3", cache_dir=hub_cache, device="cpu"))
    with pytest.raises(SystemExit) as stopped:
        main(["heads", "--model", "tiny-org/absent", "--model-cache-dir", str(hub_cache)])
    message = str(stopped.value.code)
    assert "\n" not in message and message.startswith("start-up error: model.name: tiny-org/absent")
    assert "bertserve download tiny-org/absent" in message

    args = ["serve", "--model", "tiny-org/absent", "--model-cache-dir", str(hub_cache), "--port", "0", "--no-warmup"]
    result = bertserve(*args, env=command_env(tmp_path, HF_HUB_OFFLINE="1"), timeout=60)
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    failed = [line for line in result.stderr.splitlines() if "start-up failed" in line]
    assert len(failed) == 1 and "bertserve download tiny-org/absent" in failed[0], result.stderr


def test_progress_bars_are_off_with_json_logs(checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    """Download bars would break JSON log lines: `logging.format = json` turns them off, plain leaves them on."""
    asked: list[bool] = []

    def fetch(model: str, *, revision: str | None, cache_dir: Path | None, progress: bool) -> Path:
        asked.append(progress)
        return checkpoints["main"]

    with monkeypatch.context() as patched:
        patched.setattr(hub, "fetch", fetch)
        load_encoder(ServerConfig(model=REPO, device="cpu"))
        load_encoder(ServerConfig(model=REPO, device="cpu", logging=LoggingConfig(format="json")))
    assert asked == [True, False]

    passed: dict[str, Any] = {}
    monkeypatch.setattr(hub, "_files_on_hub", lambda model, revision: ["config.json"])
    monkeypatch.setattr(hub, "snapshot_download", lambda model, **kwargs: passed.update(kwargs) or "/x")
    hub.fetch(REPO, progress=False)
    assert passed["tqdm_class"] is not None and passed["tqdm_class"](range(1)).disable
    hub.fetch(REPO, progress=True)
    assert passed["tqdm_class"] is None  # the hub library's own bars, HF_HUB_DISABLE_PROGRESS_BARS and all


# --- a fake hub ------------------------------------------------------------------------------------------


@dataclass
class FakeRepo:
    refs: dict[str, str]
    commits: dict[str, dict[str, bytes]]
    token: str | None = None  # the bearer token it needs, if private


@dataclass
class FakeHub:
    """Just enough of the hub's HTTP API for huggingface_hub 2.4: repo info, tree listing, resolve (HEAD, GET)."""

    repos: dict[str, FakeRepo]
    requests: list[tuple[str, str, str | None]] = field(default_factory=list)

    def answer(self, method: str, path: str, authorization: str | None) -> tuple[int, dict[str, str], bytes]:
        self.requests.append((method, path, authorization))
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)(?:/(revision|tree)/([^/]+))?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        match = api or resolve
        if match is None:
            return 404, {}, b"not found"
        repo = self.repos.get(match.group(1))
        if repo is None:
            return 404, {"X-Error-Code": "RepoNotFound"}, b"Repository not found"
        if repo.token is not None and authorization != f"Bearer {repo.token}":
            return 401, {"X-Error-Message": "Invalid credentials in Authorization header"}, b"unauthorized"
        revision = unquote((api.group(3) if api else resolve.group(2)) or "main")  # type: ignore[union-attr]
        commit = repo.refs.get(revision, revision)
        if commit not in repo.commits:
            return 404, {"X-Error-Code": "RevisionNotFound"}, b"Revision not found"
        files = repo.commits[commit]
        if api and api.group(2) == "tree":
            listing = [
                {"type": "file", "path": name, "size": len(data), "oid": _sha(data, "sha1")}
                for name, data in files.items()
            ]
            return 200, {"Content-Type": "application/json"}, json.dumps(listing).encode()
        if api:
            info = {"id": match.group(1), "sha": commit, "siblings": [{"rfilename": name} for name in files]}
            return 200, {"Content-Type": "application/json"}, json.dumps(info).encode()
        name = unquote(resolve.group(3))  # type: ignore[union-attr]
        if name not in files:
            return 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"Entry not found"
        return 200, {"X-Repo-Commit": commit, "ETag": f'"{_sha(files[name], "sha256")}"'}, files[name]

    @property
    def authorizations(self) -> set[str | None]:
        """The Authorization headers of the requests for repositories (the hub library has others of its own)."""
        return {authorization for _, path, authorization in self.requests if "tiny-org/" in path}


def _sha(data: bytes, algorithm: str) -> str:
    return hashlib.new(algorithm, data).hexdigest()


@pytest.fixture
def fake_hub(checkpoints: dict[str, Path]) -> Iterator[tuple[FakeHub, str]]:
    """The fake hub on a free port of 127.0.0.1 and its endpoint URL.

    REPO has ``main`` (the tiny checkpoint and a pytorch_model.bin and README
    that serving does not need); ``tiny-org/private`` needs the token ``hf_good``.
    """
    files = {path.name: path.read_bytes() for path in checkpoints["main"].iterdir()}
    extra = {"pytorch_model.bin": b"not needed: the safetensors weights are preferred", "README.md": b"# tiny"}
    state = FakeHub(
        {
            REPO: FakeRepo({"main": COMMIT_MAIN}, {COMMIT_MAIN: {**files, **extra}}),
            "tiny-org/private": FakeRepo({"main": COMMIT_MAIN}, {COMMIT_MAIN: files}, token="hf_good"),
        }
    )

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def _reply(self, body: bool) -> None:
            status, headers, data = state.answer(self.command, urlsplit(self.path).path, self.headers["Authorization"])
            self.send_response(status)
            for key, value in {**headers, "Content-Length": str(len(data))}.items():
                self.send_header(key, value)
            self.end_headers()
            if body:
                self.wfile.write(data)

        def do_GET(self) -> None:  # noqa: N802 (http.server's name)
            self._reply(body=True)

        def do_HEAD(self) -> None:  # noqa: N802
            self._reply(body=False)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield state, f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def run_on_a_terminal(args: list[str], env: dict[str, str], timeout: float = 120) -> tuple[int, str, str]:
    """Run bertserve with stderr on a pseudo-terminal, as a user at a shell has it (the hub shows bars there)."""
    leader, follower = pty.openpty()
    fcntl.ioctl(follower, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 100, 0, 0))  # 24 x 100: room for a bar
    process = subprocess.Popen(
        [sys.executable, "-m", "bertserve", *args], env=env, stdout=subprocess.PIPE, stderr=follower
    )
    os.close(follower)
    chunks: list[bytes] = []

    def read() -> None:
        while True:
            try:
                data = os.read(leader, 65536)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not data:
                return
            chunks.append(data)

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    stdout, _ = process.communicate(timeout=timeout)
    reader.join(timeout=5)
    os.close(leader)
    return process.returncode, stdout.decode(), b"".join(chunks).decode(errors="replace")


def test_download_fills_the_cache_and_serving_then_reads_it_offline(
    fake_hub: tuple[FakeHub, str], fingerprints: dict[str, str], tmp_path: Path
) -> None:
    state, endpoint = fake_hub
    cache = tmp_path / "cache"
    env = command_env(tmp_path, HF_ENDPOINT=endpoint, HF_TOKEN="hf_secret_test_token")
    status, stdout, stderr = run_on_a_terminal(
        ["download", REPO, "--revision", "main", "--model-cache-dir", str(cache)], env
    )
    assert status == 0, stderr

    snapshot = cache / "models--tiny-org--tiny-bert" / "snapshots" / COMMIT_MAIN
    assert stdout.splitlines()[-1] == str(snapshot)
    assert sorted(path.name for path in snapshot.iterdir()) == [
        "config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
    ]  # not pytorch_model.bin nor README.md
    assert (cache / "models--tiny-org--tiny-bert" / "refs" / "main").read_text() == COMMIT_MAIN
    assert state.authorizations == {"Bearer hf_secret_test_token"}
    assert re.search(r"100%\|", stderr), stderr  # the hub library's download bar

    seen = len(state.requests)
    args = ["heads", "--model", REPO, "--model-cache-dir", str(cache), "--device", "cpu"]
    result = bertserve(*args, env={**env, "HF_HUB_OFFLINE": "1"})
    assert result.returncode == 0, result.stderr
    found = FINGERPRINT.search(result.stdout)
    assert found and found.group(1) == fingerprints["main"], result.stdout
    assert len(state.requests) == seen  # all from the cache


@pytest.mark.parametrize(
    "switch", [{"HF_HUB_DISABLE_PROGRESS_BARS": "1"}, {"BERTSERVE_LOGGING_FORMAT": "json"}], ids=["hub-switch", "json"]
)
def test_no_download_bar_when_switched_off(
    fake_hub: tuple[FakeHub, str], tmp_path: Path, switch: dict[str, str]
) -> None:
    """The hub library's own switch is respected, and JSON logs get no bars (they would break the lines)."""
    _, endpoint = fake_hub
    env = command_env(tmp_path, HF_ENDPOINT=endpoint, **switch)
    status, _, stderr = run_on_a_terminal(["download", REPO, "--model-cache-dir", str(tmp_path / "cache")], env)
    assert status == 0, stderr
    assert "|" not in stderr and "%" not in stderr, stderr


def test_download_failures_say_why_in_one_line(fake_hub: tuple[FakeHub, str], tmp_path: Path) -> None:
    _, endpoint = fake_hub
    cases = {
        "unknown repo": (["tiny-org/absent"], {}, r"tiny-org/absent: no such model on the hub \(HTTP 404\)"),
        "unknown revision": ([REPO, "--revision", "v9"], {}, rf"{REPO}: revision v9 not found on the hub"),
        "token refused": (
            ["tiny-org/private"],
            {"HF_TOKEN": "hf_bad"},
            r"the hub refused the token \(HTTP 401\); give one with access",
        ),
        "no hub": ([REPO], {"HF_ENDPOINT": "http://127.0.0.1:9"}, r"is not in the hub cache .* cannot be reached"),
    }
    running = {}
    for name, (args, extra, _) in cases.items():
        env = command_env(tmp_path, **{"HF_ENDPOINT": endpoint, **extra})
        command = [sys.executable, "-m", "bertserve", "download", *args, "--model-cache-dir", str(tmp_path / name)]
        running[name] = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    for name, process in running.items():
        stdout, stderr = process.communicate(timeout=120)
        assert process.returncode == 1, (name, stdout, stderr)
        line = one_line(stderr)
        assert line.startswith("download error: ") and re.search(cases[name][2], line), (name, stderr)
        assert "Traceback" not in stderr
