"""How a plugin describes a typed gRPC service it adds to the server."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc

if TYPE_CHECKING:
    from .runtime import HeadRunner


@dataclass(frozen=True)
class ServiceDefinition:
    """A typed gRPC service: its full name, how to add it, the heads it needs.

    `add_to_server` is called once, before the server starts, with the
    `grpc.aio.Server` and a `HeadRunner`; calls on the runner made before the
    encoder has loaded answer UNAVAILABLE.
    """

    name: str
    add_to_server: Callable[[grpc.aio.Server, HeadRunner], Any]
    heads: tuple[str, ...] = ()
