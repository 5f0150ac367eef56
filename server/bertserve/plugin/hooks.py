"""The pluggy hook specifications of bertserve (project name ``bertserve``).

A plugin is a module (or object) with functions marked `@hookimpl`, found
through the ``bertserve.heads`` entry-point group. It declares the plugin API
version it targets as ``BERTSERVE_API_VERSION = "1.1"``; a plugin for another
major version, or a newer minor one, is refused with a clear message. Hooks
only register objects; per-request behaviour lives on the registered `Head`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from bertserve.plugin.head import Head
    from bertserve.plugin.service import ServiceDefinition
    from bertserve.plugin.settings import PluginSettings

PROJECT_NAME = "bertserve"
API_VERSION = "1.1"
"""The plugin API this server offers. 1.1 added `EncoderView` (``pooler``,
``embeddings``, ``encode_texts``, ``encode_rows``), `PluginSettings`, `InputFields`
and the `bertserve.plugin` module; plugins written for 1.0 load unchanged."""

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_heads(register: Callable[[Head], None], config: PluginSettings) -> None:
    """Register the task heads this plugin provides.

    Call ``register(head)`` once per `Head` instance. Head names must be
    unique across all plugins: a duplicate name fails start-up naming both
    plugins. Do no heavy work here; weights load later in `Head.load`, where
    a failure marks only that head as not loaded.

    Example::

        @hookimpl
        def register_heads(register, config):
            register(MyHead())
    """


@hookspec
def register_services(register: Callable[[ServiceDefinition], None], config: PluginSettings) -> None:
    """Register typed gRPC services this plugin adds, generated from its own `.proto`.

    Call ``register(ServiceDefinition(name, add_to_server, heads))`` per
    service. `name` is the fully qualified service name (``acme.v1.EmotionService``);
    `add_to_server(server, runner)` adds the servicer to the `grpc.aio.Server`,
    and the servicer answers through ``runner.head(...)`` and
    ``await runner.run(...)`` so its requests share the encoder batches;
    `heads` names the heads it needs, and health reports the service SERVING
    once they have all loaded. Reflection lists the service. The built-in
    task services are registered through this same hook.

    Example::

        @hookimpl
        def register_services(register, config):
            register(ServiceDefinition(
                name="acme.v1.EmotionService",
                add_to_server=lambda server, runner: emotion_pb2_grpc.add_EmotionServiceServicer_to_server(
                    EmotionServicer(runner), server),
                heads=("emotion",),
            ))
    """


def hook_names() -> set[str]:
    """The names of every hook a plugin may implement."""
    return {name for name, value in globals().items() if hasattr(value, f"{PROJECT_NAME}_spec")}
