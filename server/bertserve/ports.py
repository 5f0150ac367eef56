"""Binding the server's ports with one clear error when a port cannot be had.

gRPC only says "Failed to bind"; `bind_failure` probes the address with a
plain socket to say why (in use, not this host's, no permission) and names
the setting to change. gRPC's ports are bound without SO_REUSEPORT unless
``server.reuse_port`` asks for it, so a second server on a port in use stops
instead of silently sharing the traffic.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

from bertserve.config import StartupError

_SHARE_HINT = ", or set server.reuse_port = true to share it with other processes"


def bind_failure(
    setting: str, host: str, port: int | None, *, reason: str | None = None, shareable: bool = False
) -> str:
    """The one-line error for `setting` whose address `host:port` could not be bound (no `reason`: probe for it)."""
    reason = reason or (_probe(host, port) if port is not None else None) or "gRPC could not bind it"
    hint = "stop the other process or pick another port" + (_SHARE_HINT if shareable else "")
    return f"{setting}: cannot listen on {host}:{port}: {reason}; {hint}"


def _probe(host: str, port: int) -> str | None:
    """Why a plain socket cannot bind `host:port` (None: it can, or the host does not resolve)."""
    try:
        family, kind, _, _, address = socket.getaddrinfo(host.strip("[]"), port, type=socket.SOCK_STREAM)[0]
    except (OSError, UnicodeError) as error:
        return f"the host does not resolve ({error})"
    with socket.socket(family, kind) as probe:
        try:
            probe.bind(address)
        except OSError as error:
            return error.strerror or str(error)
    return None


def bind_grpc(add_port: Callable[[str], int], setting: str, host: str, port: int) -> int:
    """`add_port("host:port")` on a gRPC server; a failure raises `StartupError` naming `setting`."""
    try:
        return add_port(f"{host}:{port}")
    except RuntimeError:
        raise StartupError(bind_failure(setting, host, port, shareable=True)) from None


def bind_error(setting: str, host: str, port: int | None, error: OSError) -> StartupError:
    """`StartupError` for a non-gRPC port (metrics, HTTP) that raised `error` while binding."""
    return StartupError(bind_failure(setting, host, port, reason=error.strerror or str(error)))
