"""Background workers: consumers fed from named channel layer channels instead of clients."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import signal
from collections.abc import Sequence
from typing import Any

from channels_layer import BaseChannelLayer
from channels_layer.base import Lease
from consumers import metrics
from consumers.types import ASGIApp, Message

logger = logging.getLogger("consumers.worker")

RESTART_DELAY = 1.0


class Worker:
    """Runs ``application`` for each named channel with scope
    ``{"type": "channel", "channel": name}``, receiving that channel's layer messages.

    ``concurrency`` instances per channel compete for its messages, so a slow job does not
    hold up the next one (Channels runs exactly one). An instance that crashes is logged and
    replaced; the worker itself keeps running.
    """

    def __init__(
        self,
        application: ASGIApp,
        channels: Sequence[str],
        channel_layer: BaseChannelLayer,
        concurrency: int = 1,
    ) -> None:
        if not channels:
            raise ValueError("Worker needs at least one channel name")
        for channel in channels:
            channel_layer.require_valid_channel_name(channel)
            if "!" in channel:
                raise ValueError(f"Worker channels must be plain names, not {channel!r}")
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, got {concurrency}")
        self.application = application
        self.channels = list(channels)
        self.channel_layer = channel_layer
        self.concurrency = concurrency

    def run(self) -> None:
        """Run until SIGINT or SIGTERM."""
        metrics.serve_from_thread()
        asyncio.run(self._run_until_signalled())

    async def _run_until_signalled(self) -> None:
        loop = asyncio.get_running_loop()
        task = asyncio.ensure_future(self.arun())
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
        logger.info("Worker for %s stopped", ", ".join(self.channels))

    async def arun(self) -> None:
        """Serve every channel until cancelled."""
        logger.info(
            "Worker listening on %s (%d per channel)", ", ".join(self.channels), self.concurrency
        )
        async with asyncio.TaskGroup() as group:
            for channel in self.channels:
                for _ in range(self.concurrency):
                    group.create_task(self._serve(channel))

    async def _serve(self, channel: str) -> None:
        scope = {"type": "channel", "channel": channel}
        leased = self.channel_layer.lease_timeout(channel) is not None
        while True:
            receive: Any = (
                _LeasedReceive(self.channel_layer, channel)
                if leased
                else functools.partial(self.channel_layer.receive, channel)
            )
            try:
                await self.application(scope, receive, _no_client)
                if leased:
                    await receive.finish()
            except asyncio.CancelledError:
                if leased:  # stopping: the job in hand can run elsewhere at once
                    await asyncio.shield(receive.give_back())
                raise
            except Exception:
                logger.exception("Worker application for channel %r crashed; restarting", channel)
                if leased:  # redelivered once its lease runs out, not in a tight loop
                    receive.abandon()
                await asyncio.sleep(RESTART_DELAY)


class _LeasedReceive:
    """``receive`` for an instance on an at-least-once channel. A consumer asks for its
    next message only after handling the last, so asking finishes the last one's lease."""

    def __init__(self, layer: BaseChannelLayer, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self.held: Lease | None = None

    async def __call__(self) -> Message:
        await self.finish()
        message, self.held = await self.layer.receive_leased(self.channel)
        return message

    async def finish(self) -> None:
        if self.held is not None:
            lease, self.held = self.held, None
            await lease.finish()

    async def give_back(self) -> None:
        if self.held is not None:
            metrics.job_redelivered()
            lease, self.held = self.held, None
            await lease.give_back()

    def abandon(self) -> None:
        if self.held is not None:
            metrics.job_redelivered()
            self.held.abandon()
            self.held = None


async def _no_client(message: Message) -> None:
    raise RuntimeError(
        "A worker consumer has no client connection to send to; reply through the channel "
        "layer instead (self.channel_layer.send() or group_send())"
    )
