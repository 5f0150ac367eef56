"""One place that maps exceptions to gRPC statuses for every unary RPC."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from .errors import BertServeError

log = logging.getLogger(__name__)


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Turns `BertServeError` into its rich status and any other exception into INTERNAL.

    Streaming handlers (health Watch, reflection) pass through untouched.
    """

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None or handler.unary_unary is None:
            return handler
        method = handler_call_details.method
        inner = handler.unary_unary

        async def mapped(request: Any, context: grpc.aio.ServicerContext) -> Any:
            try:
                return await inner(request, context)
            except BertServeError as error:
                await context.abort_with_status(error.to_status())
            except grpc.aio.AbortError:
                raise
            except Exception:
                log.exception("unexpected error in %s", method)
                await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; see the server log")

        return grpc.unary_unary_rpc_method_handler(
            mapped,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
