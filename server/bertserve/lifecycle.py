"""`bertserve serve`'s process lifecycle: load, serve, and drain on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from collections.abc import Iterable
from typing import TYPE_CHECKING

from bertserve.config import ServerConfig

if TYPE_CHECKING:
    from bertserve.model.registry import Plugin

log = logging.getLogger("bertserve")

EXIT_STUCK = 3
"""The exit status after a stuck forward when ``server.exit_on_stuck_forward`` is on."""


async def serve_until_signalled(
    config: ServerConfig, *, plugins: Iterable[Plugin | tuple[str, object]] | None = None
) -> int:
    """Serve until SIGTERM or SIGINT, then drain and stop; returns the exit status.

    Start-up binds the port at once (health NOT_SERVING, liveness SERVING),
    loads the encoder and heads, warms them up and turns SERVING. On the
    signal, health turns NOT_SERVING, new calls get UNAVAILABLE, and accepted
    requests get `shutdown_grace_seconds` to finish. Exit status 0 after a
    clean drain, 1 when start-up failed. `plugins` replaces entry-point
    discovery, as in `BertServeServer`. A second signal stops at once. With
    ``exit_on_stuck_forward``, a stuck forward ends the process with status
    `EXIT_STUCK` (its thread cannot be stopped) once the waiting requests got
    their UNAVAILABLE answers.
    """
    from bertserve.app import BertServeServer

    server = BertServeServer(config, plugins=plugins)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loading = asyncio.ensure_future(server.load())
    waiting = asyncio.ensure_future(stop.wait())
    if config.exit_on_stuck_forward:
        exit_when_stuck = asyncio.ensure_future(_exit_when_stuck(server.stuck_forward))  # noqa: F841 (kept alive)
    await asyncio.wait({loading, waiting}, return_when=asyncio.FIRST_COMPLETED)
    if not loading.done():  # signalled while loading: nothing was accepted yet
        loading.cancel()
        log.info("stopped while loading")
        await server.stop(grace=None)
        return 0
    if loading.exception() is not None:
        log.error("start-up failed: %s", loading.exception())
        waiting.cancel()
        await server.stop(grace=None)
        return 1
    await waiting
    stop.clear()
    log.info("signal received: draining")
    draining = asyncio.ensure_future(server.stop(grace=config.shutdown_grace_seconds))
    again = asyncio.ensure_future(stop.wait())
    await asyncio.wait({draining, again}, return_when=asyncio.FIRST_COMPLETED)
    if not draining.done():
        log.warning("second signal: stopping without waiting for the requests in progress")
        draining.cancel()
        await server.stop(grace=None)
    again.cancel()
    log.info("stopped")
    return 0


async def _exit_when_stuck(stuck: asyncio.Event) -> None:
    """Exit the process with `EXIT_STUCK` once a forward is stuck, for the orchestrator to restart it."""
    await stuck.wait()
    log.error("a forward is stuck; exiting with status %d (server.exit_on_stuck_forward)", EXIT_STUCK)
    await asyncio.sleep(0.5)  # the refused requests' answers go out first
    logging.shutdown()
    os._exit(EXIT_STUCK)
