"""The server's version, as its distribution metadata states it (the one place is ``pyproject.toml``)."""

from __future__ import annotations

import platform
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bertserve")
except PackageNotFoundError:  # run from a source tree without installing
    __version__ = "0+unknown"

# The distributions whose versions a bug report needs, beside the server's own.
COMPONENTS = ("bertserve-client", "torch", "transformers", "grpcio", "protobuf")


def version_report() -> str:
    """``bertserve X`` and, on a second line, the versions it runs with (read from metadata, nothing imported)."""
    parts = []
    for name in COMPONENTS:
        try:
            parts.append(f"{name} {version(name)}")
        except PackageNotFoundError:
            parts.append(f"{name} (not installed)")
    parts.append(f"Python {platform.python_version()}")
    return f"bertserve {__version__}\n" + ", ".join(parts)
