"""The pluggy hook specifications of bertserve (project name ``bertserve``).

A plugin is a module or object with functions marked `@hookimpl`, found
through the ``bertserve.heads`` entry-point group. Hooks only register
objects; per-request behaviour lives on the registered `Head`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from .config import ServerConfig
    from .heads import Head

PROJECT_NAME = "bertserve"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def register_heads(register: Callable[[Head], None], config: ServerConfig) -> None:
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
