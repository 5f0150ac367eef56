"""Transport security (TLS, mutual TLS) and bearer-token authentication.

`server_credentials` turns `SecurityConfig` into gRPC server credentials;
`TokenStore` holds the configured bearer tokens and checks them in constant
time; `AuthInterceptor` requires ``authorization: Bearer TOKEN`` metadata on
every RPC except health (and reflection, when public) and records who called
in `current_principal`.

Tokens file, one token per line (``#`` starts a comment line)::

    # TOKEN                 [NAME     [METHOD-PATTERN,...]]
    3f9c0d7e5b1a...          ops
    8a41b6c2e9d0...          reader   /bertserve.v1.ModelService/*,/bertserve.v1.SentimentService/*

A pattern is an `fnmatch` glob on the full gRPC method name; a token without
patterns may call every method. A token without a name is named after its
line (``line-3``); tokens from `SecurityConfig.tokens` are named ``env-1``,
``env-2``, ... and may call every method. Tokens are never logged, and no
error message repeats one.
"""

from __future__ import annotations

import contextvars
import fnmatch
import hmac
import logging
import ssl
import stat
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc

from bertserve.config import SecurityConfig
from bertserve.plugin.errors import BertServeError, PermissionDenied, Unauthenticated
from bertserve.wire.status import to_status

log = logging.getLogger(__name__)

#: The name of the token that authenticated the current RPC; None for open
#: methods (health, public reflection) and on servers without tokens.
current_principal: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "bertserve_current_principal", default=None
)

MISSING_TOKEN_MESSAGE = "this server requires a bearer token: send metadata 'authorization: Bearer <token>'"
INVALID_TOKEN_MESSAGE = "the bearer token is not valid"

HEALTH_METHODS = "/grpc.health.v1.Health/*"
REFLECTION_METHODS = ("/grpc.reflection.v1alpha.ServerReflection/*", "/grpc.reflection.v1.ServerReflection/*")


# --- TLS -------------------------------------------------------------------------------------------------------------


def server_credentials(security: SecurityConfig) -> grpc.ServerCredentials | None:
    """TLS server credentials for `security`, or None when TLS is off.

    With `tls_client_ca` every client must present a certificate signed by
    that CA (mutual TLS). Missing, unreadable or non-PEM files and incomplete
    combinations raise `ValueError` naming the config key.
    """
    if security.tls_key is not None and security.tls_cert is None:
        raise ValueError("security.tls_key is set but security.tls_cert is not: TLS needs both")
    if security.tls_client_ca is not None and security.tls_cert is None:
        raise ValueError(
            "security.tls_client_ca (mutual TLS) needs server TLS: set security.tls_cert and security.tls_key too"
        )
    if security.tls_cert is None:
        return None
    if security.tls_key is None:
        raise ValueError("security.tls_cert is set but security.tls_key is not: TLS needs both")
    cert = _read_pem("security.tls_cert", security.tls_cert, "CERTIFICATE", "a PEM certificate")
    key = _read_pem("security.tls_key", security.tls_key, "PRIVATE KEY", "a PEM private key")
    if b"ENCRYPTED" in key:
        raise ValueError(
            f"security.tls_key: {security.tls_key} is encrypted; gRPC needs an unencrypted PEM key "
            "(protect the file with its permissions instead)"
        )
    _check_pair(security.tls_cert, security.tls_key)
    client_ca = None
    if security.tls_client_ca is not None:
        client_ca = _read_pem("security.tls_client_ca", security.tls_client_ca, "CERTIFICATE", "a PEM CA certificate")
        try:
            ssl.create_default_context(cadata=client_ca.decode("ascii", "replace"))
        except (ssl.SSLError, ValueError) as error:
            raise ValueError(f"security.tls_client_ca: {security.tls_client_ca} holds no usable CA: {error}") from None
    return grpc.ssl_server_credentials(
        [(key, cert)], root_certificates=client_ca, require_client_auth=client_ca is not None
    )


def _check_pair(cert: Path, key: Path) -> None:
    # gRPC only says "failed to bind" when they do not fit; the standard library's OpenSSL says why.
    try:
        ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).load_cert_chain(cert, key, password=b"")
    except ssl.SSLError as error:
        hint = " (is the key the certificate's own?)" if "MISMATCH" in str(error).upper() else ""
        raise ValueError(
            f"security.tls_cert, security.tls_key: {cert} and {key} are not usable{hint}: {error}"
        ) from None


def _read_pem(key: str, path: Path, label: str, what: str) -> bytes:
    data = _read_file(key, path)
    if b"-----BEGIN " not in data or f"{label}-----".encode() not in data:
        raise ValueError(f"{key}: {path} is not {what} (no '-----BEGIN ...{label}-----' line)")
    return data


def _read_file(key: str, path: Path) -> bytes:
    path = Path(path)
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise ValueError(f"{key}: file {path} not found") from None
    except IsADirectoryError:
        raise ValueError(f"{key}: {path} is a folder, not a file") from None
    except OSError as error:
        raise ValueError(f"{key}: cannot read {path}: {error.strerror or error}") from None


# --- tokens ----------------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Principal:
    """Who a token belongs to and which methods it may call (fnmatch globs; empty: all)."""

    name: str
    patterns: tuple[str, ...] = ()

    def may_call(self, method: str) -> bool:
        return not self.patterns or any(fnmatch.fnmatchcase(method, pattern) for pattern in self.patterns)


@dataclass(frozen=True)
class _Entry:
    secret: bytes = field(repr=False)
    principal: Principal


class TokenStore:
    """The configured bearer tokens; lookups compare against every token in constant time."""

    def __init__(self, entries: Iterable[tuple[str, Principal]]) -> None:
        self._entries = tuple(_Entry(token.encode(), principal) for token, principal in entries)
        if not self._entries:
            raise ValueError("a TokenStore needs at least one token")

    def __repr__(self) -> str:
        return f"TokenStore({', '.join(e.principal.name for e in self._entries)})"

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def principals(self) -> tuple[Principal, ...]:
        return tuple(entry.principal for entry in self._entries)

    @classmethod
    def from_config(cls, security: SecurityConfig) -> TokenStore | None:
        """The tokens of `tokens_file` and `tokens`; None when neither is set.

        Bad lines, empty or repeated tokens, repeated names and a tokens file
        without tokens raise `ValueError` naming the config key (never the token).
        """
        entries: list[tuple[str, Principal, str]] = []
        if security.tokens_file is not None:
            entries += _parse_tokens_file(security.tokens_file)
        for number, token in enumerate(security.tokens, 1):
            where = f"security.tokens: entry {number}"
            _check_token(token, where)
            entries.append((token, Principal(f"env-{number}"), where))
        if not entries:
            return None
        tokens: dict[str, str] = {}
        names: dict[str, str] = {}
        for token, principal, where in entries:
            if token in tokens:
                raise ValueError(f"{where} repeats the token of {tokens[token]}; each token must be unique")
            if principal.name in names:
                raise ValueError(f"{where} repeats the name {principal.name!r} of {names[principal.name]}")
            tokens[token] = names[principal.name] = where
        return cls((token, principal) for token, principal, _ in entries)

    def authenticate(self, token: str) -> Principal | None:
        """The principal of `token`, or None.

        Compares against every configured token with `hmac.compare_digest`
        and never stops early, so the time taken does not tell which token,
        or how much of one, matched.
        """
        candidate = token.encode("utf-8", "replace")
        found: Principal | None = None
        for entry in self._entries:
            if hmac.compare_digest(candidate, entry.secret):
                found = entry.principal
        return found

    def authenticate_header(self, value: str | None) -> Principal | None:
        """The principal of an ``authorization`` header value (``Bearer TOKEN``), or None."""
        token = bearer_token(value)
        return None if token is None else self.authenticate(token)

    def check_authorization_header(self, value: str | None) -> bool:
        """Whether an HTTP ``Authorization`` header carries a valid bearer token (for the metrics endpoint)."""
        return self.authenticate_header(value) is not None


def bearer_token(value: str | None) -> str | None:
    """The token of an ``authorization`` value ``Bearer TOKEN`` (scheme case-insensitive), else None."""
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token:
        return None
    return token


def _parse_tokens_file(path: Path) -> list[tuple[str, Principal, str]]:
    key = "security.tokens_file"
    text = _read_file(key, path).decode("utf-8", "replace")
    _warn_if_readable_by_others(Path(path))
    entries = []
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{key}: {path} line {number}"
        fields = line.split(None, 2)
        token = fields[0]
        _check_token(token, where)
        name = fields[1] if len(fields) > 1 else f"line-{number}"
        patterns: tuple[str, ...] = ()
        if len(fields) > 2:
            patterns = tuple(pattern.strip() for pattern in fields[2].split(","))
            for pattern in patterns:
                if not pattern:
                    raise ValueError(f"{where}: empty method pattern (patterns are separated by single commas)")
                if not pattern.startswith(("/", "*")):
                    raise ValueError(
                        f"{where}: method pattern {pattern!r} must start with '/' or '*', "
                        "e.g. /bertserve.v1.ModelService/*"
                    )
        entries.append((token, Principal(name, patterns), where))
    if not entries:
        raise ValueError(f"{key}: {path} holds no tokens (one per line: TOKEN [NAME [METHOD-PATTERN,...]])")
    return entries


def _check_token(token: str, where: str) -> None:
    if not token or not token.strip():
        raise ValueError(f"{where}: the token is empty")
    if any(not ("!" <= char <= "~") for char in token):
        raise ValueError(f"{where}: a token may hold only printable ASCII characters without spaces")


def _warn_if_readable_by_others(path: Path) -> None:
    try:
        mode = path.stat().st_mode
    except OSError:
        return
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        log.warning("tokens file %s is accessible to other users; consider chmod 600", path)


# --- the interceptor -------------------------------------------------------------------------------------------------


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Requires a valid bearer token on every RPC but health (and reflection, when public).

    Missing or malformed ``authorization`` metadata and unknown tokens end the
    call with UNAUTHENTICATED; a token whose patterns exclude the method with
    PERMISSION_DENIED. A refused call is answered by a handler that reads no
    request message, whatever the method's kind, so the request is never
    parsed and unknown methods are not told apart from known ones. The name of
    the authenticated token is set in `current_principal`.
    """

    def __init__(self, tokens: TokenStore, *, public_reflection: bool = False) -> None:
        self.tokens = tokens
        self._open = (HEALTH_METHODS, *(REFLECTION_METHODS if public_reflection else ()))

    def is_open(self, method: str) -> bool:
        """Whether `method` may be called without a token."""
        return any(fnmatch.fnmatchcase(method, pattern) for pattern in self._open)

    def authorize(self, method: str, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        """The principal allowed to call `method` with this metadata; raises `Unauthenticated` or `PermissionDenied`."""
        principal = self.authenticate(metadata)
        if not principal.may_call(method):
            raise PermissionDenied(
                f"the token {principal.name!r} may not call {method}; it may call {', '.join(principal.patterns)}",
                reason="METHOD_NOT_ALLOWED",
                metadata={"principal": principal.name, "method": method},
            )
        return principal

    def authenticate(self, metadata: Sequence[tuple[str, str | bytes]] | None) -> Principal:
        """The principal of the one valid bearer token in this metadata; raises `Unauthenticated`."""
        values = [value for key, value in metadata or () if key.lower() == "authorization"]
        if len(values) > 1:
            raise Unauthenticated(
                f"send one 'authorization' metadata entry, not {len(values)}", reason="BEARER_TOKEN_AMBIGUOUS"
            )
        value = values[0] if values else None
        token = bearer_token(value if isinstance(value, str) else None)
        if token is None:
            raise Unauthenticated(MISSING_TOKEN_MESSAGE, reason="BEARER_TOKEN_MISSING")
        principal = self.tokens.authenticate(token)
        if principal is None:
            raise Unauthenticated(INVALID_TOKEN_MESSAGE, reason="BEARER_TOKEN_INVALID")
        return principal

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        method = handler_call_details.method
        if self.is_open(method):
            return await continuation(handler_call_details)
        try:
            principal = self.authorize(method, handler_call_details.invocation_metadata)  # type: ignore[attr-defined]
        except BertServeError as error:
            return _refusal(method, error)
        # The interceptor chain and the handler run in the RPC's own task, so the handler sees this value.
        current_principal.set(principal.name)
        return await continuation(handler_call_details)


def _refusal(method: str, error: BertServeError) -> grpc.RpcMethodHandler:
    """A handler that ends any call at once with `error`, without reading a request message.

    On the wire all four method kinds look alike, so a stream-stream handler
    that never reads its request stream answers unary and streaming calls
    alike.
    """
    status = to_status(error)

    async def refuse(requests: Any, context: grpc.aio.ServicerContext) -> None:
        log.warning("refused %s from %s: %s %s", method, context.peer(), status.code.name, error.reason)
        await context.abort_with_status(status)

    return grpc.stream_stream_rpc_method_handler(refuse)


# --- assembly --------------------------------------------------------------------------------------------------------


def check_security(security: SecurityConfig) -> None:
    """Validate TLS files and tokens of `security` (reads the files); raises `ValueError` naming the key."""
    server_credentials(security)
    TokenStore.from_config(security)
