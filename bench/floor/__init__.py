"""The floor of the Channels consumer API: the least work any implementation of it must do.

A benchmark reference, not a framework: the API's shape and nothing else.
- Async: the user's ``async def receive`` is the one coroutine a frame no implementation
  can leave out; the frame's way to it and ``send`` are plain calls giving the next
  awaitable (``await self.send(...)`` still works).
- Sync: the handler runs on a thread, one hop there and one back, batched (one thread
  for all connections, woken only when idle, its ends handed back to the loop in one
  call a batch).
- A group send runs each member's handler in the sender's task, one after another.

Everything a real framework adds (metrics, a send deadline, a layer channel and reader
per consumer, each handler in its own task's context, turns between the connection and
the layer, error handling, a thread pool that isolates slow handlers, origin and auth
checks) is left out. ``routes.build("bench.floor", http)`` builds the benchmark's consumers
on it, as on ``consumers`` and ``channels`` (``--impls floor``): ours/floor is what our
features and compatibility cost, floor/bare what the API itself costs on a server.
"""
