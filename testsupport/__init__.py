"""Helpers shared by the tests and the benchmark: starting and stopping real processes,
reading what the kernel says about them, seeding the reference chat.

Standard library only (``chat.py`` runs ``manage.py``, it imports nothing of Django), so the
benchmark's load generator and its Channels venv can import it too. Not shipped in the wheel.
"""
