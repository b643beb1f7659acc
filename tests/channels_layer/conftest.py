"""The Redis layer fixtures (``make_layer``, ``redis_servers``) live in tests/conftest.py."""
