"""Hypercorn's settings for tests/e2e/test_without_the_app.py (``--config python:...``).

A client that stops reading blocks the application's sends (Hypercorn waits for the
socket to drain), so memory stays bounded; what closes it is the read timeout, since such
a client also stops answering the pings."""

websocket_max_message_size = 1024 * 1024
websocket_ping_interval = 2.0
read_timeout = 6
