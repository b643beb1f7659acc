"""Checks that protect consumers from requests they should not serve, such as WebSocket
handshakes started by pages on other sites."""
