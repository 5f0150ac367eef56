"""The HTTP/JSON gateway's server: aiohttp on the gRPC server's event loop, on its own port.

`attach()` (before the gRPC server starts) binds a private Unix socket on the
gRPC server for the gateway; `start()` (once the gRPC port is bound) serves
HTTP, or HTTPS with the gRPC side's certificate and key when TLS is on (and
requires client certificates from the same CA under mutual TLS); `stop()`
closes both.
"""

from __future__ import annotations

import logging
import shutil
import ssl
import tempfile
from collections.abc import Iterable
from pathlib import Path

import grpc
from aiohttp import web

from bertserve.config import ServerConfig
from bertserve.version import __version__
from bertserve.wire.http.gateway import Gateway, rpc_table
from bertserve.wire.http.oip_routes import add_oip_routes, oip_paths
from bertserve.wire.http.openapi import openapi_document
from bertserve.wire.http.routes import (
    RPC_ROUTE,
    add_native_routes,
    add_openapi_route,
    status_middleware,
    token_middleware,
)
from bertserve.wire.security import AuthInterceptor, TokenStore

log = logging.getLogger(__name__)


def ssl_context(config: ServerConfig) -> ssl.SSLContext | None:
    """HTTPS with the gRPC side's certificate and key; client certificates required under mutual TLS."""
    security = config.security
    if security.tls_cert is None or security.tls_key is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(security.tls_cert, security.tls_key)
    if security.tls_client_ca is not None:
        context.load_verify_locations(cafile=str(security.tls_client_ca))
        context.verify_mode = ssl.CERT_REQUIRED
    return context


class HttpGatewayServer:
    """Serves every RPC of the gRPC server as ``POST /package.Service/Method`` (and ``/openapi.json``)."""

    def __init__(self, config: ServerConfig, tokens: TokenStore | None) -> None:
        self.config = config
        self.tokens = tokens
        self.port: int | None = None
        self._folder: Path | None = None
        self._gateway: Gateway | None = None
        self._runner: web.AppRunner | None = None

    def attach(self, grpc_server: grpc.aio.Server) -> None:
        """Bind the gateway's private Unix socket on `grpc_server` (before it starts)."""
        self._folder = Path(tempfile.mkdtemp(prefix="bertserve-http-"))  # mode 0700: this user only
        grpc_server.add_insecure_port(f"unix:{self._folder / 'grpc.sock'}")

    async def start(self, service_names: Iterable[str], grpc_port: int) -> int:
        """Serve HTTP for the RPCs of `service_names`; returns the bound port."""
        assert self._folder is not None, "attach() first"
        settings, security = self.config.http, self.config.security
        self._gateway = Gateway(f"unix:{self._folder / 'grpc.sock'}", self.config.max_message_bytes)
        rpcs = rpc_table(service_names)
        app = web.Application(client_max_size=self.config.max_message_bytes, middlewares=[status_middleware])
        add_native_routes(app, self._gateway, rpcs, grpc_port)
        oip = add_oip_routes(app, self._gateway, rpcs)
        document = openapi_document(
            rpcs, version=__version__, bearer=self.tokens is not None, extra_paths=oip_paths() if oip else None
        )
        add_openapi_route(app, document)
        if self.tokens is not None:  # /openapi.json is open when reflection is
            open_paths = frozenset({"/openapi.json"} if security.public_reflection else ())
            auth = AuthInterceptor(self.tokens)
            app.middlewares.append(
                token_middleware(auth, self._gateway, rpcs, {RPC_ROUTE: RPC_ROUTE, **oip}, open_paths)
            )
        self._runner = web.AppRunner(app, handler_cancellation=True, access_log=None, shutdown_timeout=1.0)
        await self._runner.setup()
        context = ssl_context(self.config)
        site = web.TCPSite(self._runner, settings.host, settings.port, ssl_context=context)
        await site.start()
        self.port = int(self._runner.addresses[0][1])
        scheme = "https" if context is not None else "http"
        routes = f"{len(rpcs)} RPCs" + (" and the Open Inference Protocol's REST routes" if oip else "")
        log.info("HTTP/JSON gateway on %s://%s:%d (%s)", scheme, settings.host, self.port, routes)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        if self._gateway is not None:
            await self._gateway.close()
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)
