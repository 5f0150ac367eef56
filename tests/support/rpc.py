"""Helpers for calling a server with the raw generated stubs and reading rich errors."""

from __future__ import annotations

from dataclasses import dataclass

import grpc
from google.rpc import error_details_pb2, status_pb2


@dataclass
class RpcFailure:
    """What a non-OK RPC returned: code, message, ErrorInfo reason and field violations."""

    code: grpc.StatusCode
    message: str
    reason: str | None
    domain: str | None
    metadata: dict[str, str]
    violations: dict[str, str]
    retry_delay: float | None = None
    trailers: dict[str, str | bytes] | None = None


def call_failure(method, request, **kwargs) -> RpcFailure:  # type: ignore[no-untyped-def]
    """Call `method` expecting failure; decode google.rpc.Status details."""
    try:
        method(request, **kwargs)
    except grpc.RpcError as error:
        return decode(error)
    raise AssertionError("the call succeeded but should have failed")


def decode(error: grpc.RpcError) -> RpcFailure:
    reason = domain = None
    metadata: dict[str, str] = {}
    violations: dict[str, str] = {}
    retry_delay = None
    for key, value in error.trailing_metadata() or ():
        if key != "grpc-status-details-bin":
            continue
        status = status_pb2.Status.FromString(value)
        assert status.code == error.code().value[0], "details status code differs from the RPC status"
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                reason, domain, metadata = info.reason, info.domain, dict(info.metadata)
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                violations.update({v.field: v.description for v in bad.field_violations})
            elif detail.Is(error_details_pb2.RetryInfo.DESCRIPTOR):
                retry = error_details_pb2.RetryInfo()
                detail.Unpack(retry)
                retry_delay = retry.retry_delay.ToNanoseconds() / 1e9
    trailers = dict(error.trailing_metadata() or ())
    return RpcFailure(error.code(), error.details() or "", reason, domain, metadata, violations, retry_delay, trailers)
