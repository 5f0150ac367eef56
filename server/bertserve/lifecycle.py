"""`bertserve serve`'s process lifecycle: load, serve, and drain on SIGTERM or SIGINT."""

from __future__ import annotations

import asyncio
import logging
import signal

from bertserve.config import ServerConfig

log = logging.getLogger("bertserve")


async def serve_until_signalled(config: ServerConfig) -> int:
    """Serve until SIGTERM or SIGINT, then drain and stop; returns the exit status.

    Start-up binds the port at once (health NOT_SERVING, liveness SERVING),
    loads the encoder and heads, warms them up and turns SERVING. On the
    signal, health turns NOT_SERVING, new calls get UNAVAILABLE, and accepted
    requests get `shutdown_grace_seconds` to finish. Exit status 0 after a
    clean drain, 1 when start-up failed. A second signal stops at once.
    """
    from bertserve.app import BertServeServer

    server = BertServeServer(config)
    await server.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    loading = asyncio.ensure_future(server.load())
    waiting = asyncio.ensure_future(stop.wait())
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
