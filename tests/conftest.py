"""Shared fixtures: tiny checkpoints, head files, and in-process servers on port 0."""

from __future__ import annotations

import os

# No network in tests: any attempt to reach a model hub fails fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from bertserve.background import BackgroundServer
from bertserve.config import ServerConfig
from tiny_models import make_checkpoint, make_qa_head, make_sentiment_head


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny BertForPreTraining checkpoint (MLM + NSP heads)."""
    return make_checkpoint(tmp_path_factory.mktemp("tiny-bert"))


@pytest.fixture(scope="session")
def head_files(tiny_checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("heads")
    return {
        "sentiment": make_sentiment_head(folder / "sentiment.safetensors", tiny_checkpoint),
        "question-answering": make_qa_head(folder / "qa.safetensors", tiny_checkpoint),
    }


@pytest.fixture(scope="session")
def tiny_config(tiny_checkpoint: Path, head_files: dict[str, Path]) -> ServerConfig:
    return ServerConfig(model=str(tiny_checkpoint), head_files=dict(head_files), device="cpu", port=0)


@pytest.fixture(scope="session")
def server(tiny_config: ServerConfig) -> Iterator[BackgroundServer]:
    """One server with all four heads on the tiny checkpoint, shared by tests."""
    with BackgroundServer(tiny_config) as running:
        yield running


@pytest.fixture(scope="session")
def triton_python(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A virtual environment with tritonclient[grpc] (it needs protobuf < 7; this one has 7); pip's cache is reused."""
    venv = tmp_path_factory.mktemp("tritonclient-env") / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "--quiet", "tritonclient[grpc]", "protobuf<7"]
    result = subprocess.run(install, capture_output=True, text=True, timeout=600, env={**os.environ})
    if result.returncode != 0:
        pytest.skip(f"tritonclient[grpc] could not be installed: {result.stderr.strip()[-500:]}")
    return python
