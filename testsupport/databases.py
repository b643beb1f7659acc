"""Throwaway PostgreSQL databases for drills, end-to-end tests and the soak (psycopg is
imported only when one is made)."""

from __future__ import annotations

import contextlib
import os
import secrets
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

#: An administrative connection to the machine's PostgreSQL (``E2E_POSTGRES_URL``).
POSTGRES_URL = os.environ.get("E2E_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin(admin_url: str) -> psycopg.Connection[Any]:
    import psycopg

    return psycopg.connect(admin_url, autocommit=True, connect_timeout=10)


def create_database(admin_url: str, name: str) -> str:
    """Create database ``name`` next to ``admin_url``'s; its URL."""
    with _admin(admin_url) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    return admin_url.rsplit("/", 1)[0] + "/" + name


def drop_database(admin_url: str, name: str) -> None:
    """Drop database ``name``, closing whatever is still connected to it."""
    with _admin(admin_url) as admin:
        admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_exists(admin_url: str, name: str) -> bool:
    with _admin(admin_url) as admin:
        row = admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
    return row is not None


@contextlib.contextmanager
def temporary_database(prefix: str, admin_url: str = POSTGRES_URL) -> Iterator[str]:
    """A new empty database named ``PREFIX_<random>``; yields its URL, drops it afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    url = create_database(admin_url, name)
    try:
        yield url
    finally:
        drop_database(admin_url, name)
