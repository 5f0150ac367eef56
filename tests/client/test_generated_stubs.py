"""The committed stubs are what the committed protos generate."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_generated_stubs_are_up_to_date() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "clients/python/generate_stubs.py"), "--check"],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stderr


def test_every_generated_file_is_marked_generated() -> None:
    folder = ROOT / "clients/python/src/bertserve_client/v1"
    for path in folder.glob("*_pb2*.py*"):
        assert path.read_text().startswith("# @generated"), path


def test_stubs_carry_no_version_check_that_refuses_older_grpcio_or_protobuf() -> None:
    # generate_stubs.py removes them (its docstring says why); tests/client/test_oldest_dependencies.py
    # imports and calls the stubs under the oldest versions supported.
    src = ROOT / "clients/python/src/bertserve_client"
    for path in [*src.glob("v1/*_pb2*.py"), *src.glob("oip/*_pb2*.py")]:
        text = path.read_text()
        assert "ValidateProtobufRuntimeVersion" not in text and "_version_not_supported" not in text, path
        assert "_registered_method=True" not in text, path
