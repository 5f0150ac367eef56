"""The server's version, as its distribution metadata states it (the one place is ``pyproject.toml``)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bertserve")
except PackageNotFoundError:  # run from a source tree without installing
    __version__ = "0+unknown"
