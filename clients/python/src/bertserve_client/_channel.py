"""Channel building shared by the sync and async clients.

:func:`plan_channel` turns the clients' connection options (TLS, retries,
several targets, keepalive, raw channel options) into a :class:`ChannelPlan`:
the target to dial, the credentials and the channel options. The bearer
token does not live on the channel: :func:`bearer_metadata` makes the
metadata each call sends, so it works on insecure channels too (call
credentials would need TLS).
"""

from __future__ import annotations

import importlib
import json
import os
import pkgutil
import socket
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeAlias

import grpc

from .errors import UnavailableError

__all__ = [
    "ChannelPlan",
    "PemSource",
    "RetryPolicy",
    "bearer_metadata",
    "check_no_channel_options",
    "display_target",
    "plan_channel",
    "service_config",
]

# PEM data: the bytes themselves, a str holding them ("-----BEGIN ..."), or a file path.
PemSource: TypeAlias = bytes | str | os.PathLike[str]

# Call metadata as grpc takes it.
Metadata: TypeAlias = tuple[tuple[str, str], ...]

PACKAGE = "bertserve.v1"
DEFAULT_KEEPALIVE_TIMEOUT_S = 10.0

_RESOLVED_SCHEMES = ("ipv4:", "ipv6:")


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """How gRPC retries a failed call, sent as the ``retryPolicy`` of the channel's service config.

    gRPC core runs the retries: attempt ``n + 1`` starts after a random delay
    of up to ``min(initial_backoff * backoff_multiplier ** (n - 1), max_backoff)``
    seconds, or exactly after the server's ``grpc-retry-pushback-ms`` trailer
    when the failed attempt carried one (bertserve sends it with
    RESOURCE_EXHAUSTED). Every retry stays within the call's deadline; a
    call whose response has started (or whose request exceeds gRPC's retry
    buffer, 256 KiB by default) is not retried, nor one the caller cancelled.

    CANCELLED is retryable by default: gRPC core answers it to calls that
    reached a server as it shut down, gracefully or not (grpc/grpc issue
    41785), and every bertserve RPC is a read without side effects, so
    running one again is safe.

    Attributes:
        max_attempts: Attempts in all, the first included: 2 to 5 (gRPC
            caps the count at 5).
        initial_backoff: Upper bound of the first random delay, in seconds.
        max_backoff: Cap of the delay bound, in seconds.
        backoff_multiplier: Growth of the delay bound per attempt.
        retryable_status_codes: Status codes that trigger a retry.
    """

    max_attempts: int = 5
    initial_backoff: float = 0.1
    max_backoff: float = 5.0
    backoff_multiplier: float = 2.0
    retryable_status_codes: tuple[grpc.StatusCode, ...] = (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.RESOURCE_EXHAUSTED,
        grpc.StatusCode.CANCELLED,
    )

    def __post_init__(self) -> None:
        if isinstance(self.max_attempts, bool) or not isinstance(self.max_attempts, int):
            raise TypeError("max_attempts must be an int")
        if not 2 <= self.max_attempts <= 5:
            raise ValueError("max_attempts must be 2 to 5 (gRPC caps it at 5); pass retry=None for no retries")
        for name in ("initial_backoff", "max_backoff", "backoff_multiplier"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be positive")
        if self.max_backoff < self.initial_backoff:
            raise ValueError("max_backoff must not be below initial_backoff")
        codes = tuple(self.retryable_status_codes)
        if not codes or not all(isinstance(code, grpc.StatusCode) for code in codes):
            raise TypeError("retryable_status_codes must be a non-empty sequence of grpc.StatusCode")
        if grpc.StatusCode.OK in codes:
            raise ValueError("OK is not a retryable status code")
        object.__setattr__(self, "retryable_status_codes", codes)

    def to_json(self) -> dict[str, Any]:
        """The ``retryPolicy`` object of a gRPC service config."""
        return {
            "maxAttempts": self.max_attempts,
            "initialBackoff": _duration(self.initial_backoff),
            "maxBackoff": _duration(self.max_backoff),
            "backoffMultiplier": self.backoff_multiplier,
            "retryableStatusCodes": [code.name for code in self.retryable_status_codes],
        }


DEFAULT_RETRY = RetryPolicy()
DEFAULT_KEEPALIVE_S = 30.0


@dataclass(frozen=True)
class ChannelPlan:
    """What a client dials: the gRPC target, credentials (None: insecure) and channel options."""

    target: str
    credentials: grpc.ChannelCredentials | None
    options: tuple[tuple[str, Any], ...]

    def open(self) -> grpc.Channel:
        """A blocking channel."""
        if self.credentials is None:
            return grpc.insecure_channel(self.target, options=self.options)
        return grpc.secure_channel(self.target, self.credentials, options=self.options)

    def open_aio(self) -> grpc.aio.Channel:
        """An asyncio channel, bound to the running event loop."""
        if self.credentials is None:
            return grpc.aio.insecure_channel(self.target, options=self.options)
        return grpc.aio.secure_channel(self.target, self.credentials, options=self.options)


@dataclass(frozen=True)
class _Target:
    address: str
    round_robin: bool
    # With several resolved addresses: the authority (first host:port given) that TLS checks.
    authority: str | None = field(default=None)


def plan_channel(
    target: str | Sequence[str],
    *,
    credentials: grpc.ChannelCredentials | None = None,
    tls: bool = False,
    root_certificates: PemSource | None = None,
    client_certificate: PemSource | None = None,
    client_key: PemSource | None = None,
    server_name: str | None = None,
    retry: RetryPolicy | None = None,
    keepalive_seconds: float | None = None,
    options: Sequence[tuple[str, Any]] | None = None,
) -> ChannelPlan:
    """Turn the clients' connection options into a :class:`ChannelPlan` (see the client docstrings).

    Reads PEM files and resolves host names (several targets) at once.

    Raises:
        ValueError: Contradictory or malformed options.
        UnavailableError: A host name of several targets does not resolve.
    """
    uses_tls_options = tls or any(x is not None for x in (root_certificates, client_certificate, client_key))
    if credentials is not None and uses_tls_options:
        raise ValueError("pass either credentials or tls/root_certificates/client_certificate/client_key")
    if (client_certificate is None) != (client_key is None):
        raise ValueError("client_certificate and client_key go together (mutual TLS)")
    if uses_tls_options:
        credentials = grpc.ssl_channel_credentials(
            root_certificates=_pem(root_certificates),
            private_key=_pem(client_key),
            certificate_chain=_pem(client_certificate),
        )
    if server_name is not None and credentials is None:
        raise ValueError("server_name needs TLS (credentials, tls=True or root_certificates)")
    if retry is not None and not isinstance(retry, RetryPolicy):
        raise TypeError("retry must be a RetryPolicy or None")
    if keepalive_seconds is not None and not keepalive_seconds > 0:
        raise ValueError("keepalive_seconds must be positive, or None for no keepalive pings")

    resolved = _resolve_target(target)
    defaults: dict[str, Any] = {}
    if keepalive_seconds is not None:
        defaults["grpc.keepalive_time_ms"] = round(keepalive_seconds * 1000)
        defaults["grpc.keepalive_timeout_ms"] = round(DEFAULT_KEEPALIVE_TIMEOUT_S * 1000)
        defaults["grpc.keepalive_permit_without_calls"] = 1
        defaults["grpc.http2.max_pings_without_data"] = 0  # keep pinging an idle connection
    config = service_config(retry, round_robin=resolved.round_robin)
    if config:
        defaults["grpc.service_config"] = json.dumps(config, sort_keys=True)
    if resolved.authority is not None:
        defaults["grpc.default_authority"] = resolved.authority
    if server_name is not None:
        defaults["grpc.ssl_target_name_override"] = server_name

    # The caller's options win over the defaults of the same name.
    given = [(str(key), value) for key, value in options or ()]
    overridden = {key for key, _ in given}
    merged = [(key, value) for key, value in defaults.items() if key not in overridden] + given
    return ChannelPlan(resolved.address, credentials, tuple(merged))


def check_no_channel_options(
    credentials: grpc.ChannelCredentials | None,
    tls: bool,
    root_certificates: PemSource | None,
    client_certificate: PemSource | None,
    client_key: PemSource | None,
    server_name: str | None,
    options: Sequence[tuple[str, Any]] | None,
) -> None:
    """Refuse channel-building options next to a ready-made ``channel``, which would silently ignore them."""
    given = [
        name
        for name, value in (
            ("credentials", credentials),
            ("root_certificates", root_certificates),
            ("client_certificate", client_certificate),
            ("client_key", client_key),
            ("server_name", server_name),
            ("options", options),
        )
        if value is not None
    ]
    if tls:
        given.insert(0, "tls")
    if given:
        raise ValueError(f"{', '.join(given)} cannot apply to a channel passed in; configure that channel instead")


def service_config(retry: RetryPolicy | None, *, round_robin: bool) -> dict[str, Any]:
    """The gRPC service config: ``retry`` for every bertserve.v1 service, round-robin balancing with health checks.

    Empty when there is nothing to configure.
    """
    config: dict[str, Any] = {}
    if retry is not None:
        names = [{"service": service} for service in bertserve_services()]
        config["methodConfig"] = [{"name": names, "retryPolicy": retry.to_json()}]
    if round_robin:
        config["loadBalancingConfig"] = [{"round_robin": {}}]
        # Watch each server's grpc.health.v1 status: a replica that is loading or draining
        # (NOT_SERVING) gets no new calls, before any call has to be refused and retried.
        config["healthCheckConfig"] = {"serviceName": ""}
    return config


def bertserve_services() -> list[str]:
    """Full names of the bertserve.v1 services, from the generated modules."""
    from . import v1

    services: set[str] = set()
    for module_info in pkgutil.iter_modules(v1.__path__):
        if module_info.name.endswith("_pb2"):
            module = importlib.import_module(f"{v1.__name__}.{module_info.name}")
            services.update(s.full_name for s in module.DESCRIPTOR.services_by_name.values())
    return sorted(s for s in services if s.startswith(PACKAGE + "."))


def bearer_metadata(token: str | None) -> Metadata | None:
    """The ``authorization: Bearer <token>`` metadata every call sends; None without a token.

    Raises:
        ValueError: The token is empty or holds whitespace, control or non-ASCII characters.
    """
    if token is None:
        return None
    if not isinstance(token, str):
        raise TypeError("token must be a str")
    # The message never quotes the token.
    if not token or not all("!" <= char <= "~" for char in token):
        raise ValueError("token must be non-empty printable ASCII without spaces")
    return (("authorization", f"Bearer {token}"),)


def display_target(target: str | Sequence[str]) -> str:
    """The target as given, several joined with commas."""
    return target if isinstance(target, str) else ",".join(target)


def _resolve_target(target: str | Sequence[str]) -> _Target:
    if not isinstance(target, str):
        targets = list(target)
        if not targets or not all(isinstance(t, str) for t in targets):
            raise TypeError("target must be a str or a non-empty sequence of 'host:port' strs")
        if len(targets) > 1:
            return _resolve_several(targets)
        target = targets[0]
    # dns:///name:port with several addresses (e.g. a Kubernetes headless
    # service) is pick_first by default; round robin spreads the calls.
    several = target.startswith("dns:") or (target.startswith(_RESOLVED_SCHEMES) and "," in target)
    return _Target(target, round_robin=several)


def _resolve_several(targets: list[str]) -> _Target:
    # One ipv4: or ipv6: target lists every address; gRPC balances over them.
    endpoints = [_split_host_port(t) for t in targets]
    by_host: list[tuple[list[str], list[str], int]] = []
    for host, port in endpoints:
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as err:
            raise UnavailableError(f"cannot resolve {host!r}: {err}") from err
        v4 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET]
        v6 = [str(info[4][0]) for info in infos if info[0] == socket.AF_INET6]
        by_host.append((v4, v6, port))
    if all(v4 for v4, _, _ in by_host):
        addresses = [f"{a}:{port}" for v4, _, port in by_host for a in v4]
        scheme = "ipv4:"
    elif all(v6 for _, v6, _ in by_host):
        addresses = [f"[{a}]:{port}" for _, v6, port in by_host for a in v6]
        scheme = "ipv6:"
    else:
        raise ValueError(f"targets {targets} resolve to a mix of IPv4-only and IPv6-only hosts")
    first_host, first_port = endpoints[0]
    authority = f"[{first_host}]:{first_port}" if ":" in first_host else f"{first_host}:{first_port}"
    return _Target(scheme + ",".join(dict.fromkeys(addresses)), round_robin=True, authority=authority)


def _split_host_port(address: str) -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""  # a scheme, or an IPv6 address without brackets
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"each of several targets must be 'host:port' or '[ipv6]:port', not {address!r}")
    return host, int(port)


def _pem(source: PemSource | None) -> bytes | None:
    if source is None or isinstance(source, bytes):
        return source
    if isinstance(source, str) and source.lstrip().startswith("-----BEGIN"):
        return source.encode("ascii")
    return Path(source).read_bytes()


def _duration(seconds: float) -> str:
    # google.protobuf.Duration in JSON: decimal seconds with an "s", at most 9 decimals.
    return f"{seconds:.9f}".rstrip("0").rstrip(".") + "s"
