"""Typed gRPC services from plugins: how one is described, and what its servicer answers through.

A plugin with its own `.proto` registers a `ServiceDefinition`; its servicer
gets a `HeadRunner` and answers every call through it, so its requests share
the encoder batches with everyone else's. `InputFields` tells the runner
where in the request the task inputs sit, so errors name the right fields.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

import grpc

if TYPE_CHECKING:
    from bertserve.plugin.head import Head

InputT = TypeVar("InputT")
OutputT = TypeVar("OutputT")


@dataclass(frozen=True)
class InputFields:
    """Where a request keeps its task inputs, for the field paths of input errors.

    `items` is the field holding the inputs: a repeated field with one input
    per element (``texts``, ``pairs``), or, with `single`, one input
    (``input``). `text` is the input field that an element *is* when elements
    are plain strings (``"text"`` for ``repeated string texts``). `options`
    are input fields the request sets once for every element (``top_k``): a
    bad value is reported under its own name.
    """

    items: str
    text: str | None = None
    options: frozenset[str] = frozenset()
    single: bool = False

    def item(self, index: int, sub_field: str | None = None) -> str:
        """The path of input `index`, or of its `sub_field` (``texts[2]``, ``inputs[0].question``, ``top_k``)."""
        if sub_field is not None and sub_field in self.options:
            return sub_field
        path = self.items if self.single else f"{self.items}[{index}]"
        if sub_field is None or sub_field == self.text:
            return path
        return f"{path}.{sub_field}"


class HeadRunner(Protocol):
    """What a typed service's servicer answers through."""

    def head(self, name: str, *, task: str) -> Head[Any, Any]:
        """The loaded head `name` of `task` (empty name: the head named like the task).

        Raises the error the client should see: NOT_FOUND for an unknown
        name, FAILED_PRECONDITION for a head that is not loaded (with why).
        """
        ...

    async def run(
        self,
        head: Head[InputT, OutputT],
        items: Sequence[InputT],
        context: grpc.aio.ServicerContext | None,
        *,
        fields: InputFields | None = None,
        field_of: Callable[[int], str] | None = None,
    ) -> list[OutputT]:
        """Run `items` through `head` in the shared batches; one output per item, in order.

        Every bad item is reported at once as INVALID_ARGUMENT with field
        paths from `fields`. `field_of(i)` (the path of item i) is the plugin
        API 1.0 way to say the same; prefer `fields`.
        """
        ...


@dataclass(frozen=True)
class ServiceDefinition:
    """A typed gRPC service: its full name, how to add it, the heads it needs.

    `add_to_server` is called once, before the server starts, with the
    `grpc.aio.Server` and a `HeadRunner`; calls on the runner made before the
    encoder has loaded answer UNAVAILABLE. Health reports the service SERVING
    once every head in `heads` has loaded.
    """

    name: str
    add_to_server: Callable[[grpc.aio.Server, HeadRunner], Any]
    heads: tuple[str, ...] = ()
