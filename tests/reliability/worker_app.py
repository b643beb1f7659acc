"""A worker for the drills: each job reports its start and end to the ``results`` channel."""

import asyncio
import os

from consumers.consumer import AsyncConsumer
from consumers.routing import ChannelNameRouter, ProtocolTypeRouter


class Jobs(AsyncConsumer):
    async def job_run(self, job):
        report = {"type": "job.report", "n": job["n"], "pid": os.getpid()}
        await self.channel_layer.send("results", {**report, "event": "start"})
        await asyncio.sleep(job["seconds"])
        await self.channel_layer.send("results", {**report, "event": "end"})


application = ProtocolTypeRouter({"channel": ChannelNameRouter({"jobs": Jobs.as_asgi()})})
