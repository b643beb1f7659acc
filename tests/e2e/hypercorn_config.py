"""Hypercorn's settings for tests/e2e/test_without_the_app.py (``--config python:...``):
the frame limit the other servers are given (Hypercorn's default is 16 MiB)."""

websocket_max_message_size = 1024 * 1024
