"""Helpers shared by the tests and the benchmark: starting and stopping real processes,
reading what the kernel says about them, seeding the reference chat.

Standard library only (``chat.py`` runs ``manage.py`` and imports nothing of Django;
``databases.py`` imports psycopg when it makes a database, ``redis_servers.py`` redis-py), so
the benchmark's load generator can import it too. Not shipped in the wheel.
"""
