"""The HTTP/JSON gateway: every RPC as ``POST /package.Service/Method`` with JSON (NDJSON streams), on its own port.

Each HTTP call is made a gRPC call on the server's own port (through a
private Unix socket), so it gets the same authentication, limits,
admission, metrics, request ids and logs as a gRPC call.
"""

from bertserve.wire.http.server import HttpGatewayServer

__all__ = ["HttpGatewayServer"]
