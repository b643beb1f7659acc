"""Throwaway PostgreSQL databases for drills, end-to-end tests and the soak (psycopg is
imported only when one is made)."""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import time
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg

#: An administrative connection to the machine's PostgreSQL (``E2E_POSTGRES_URL``).
POSTGRES_URL = os.environ.get("E2E_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")


def _admin(admin_url: str) -> psycopg.Connection[Any]:
    import psycopg

    return psycopg.connect(admin_url, autocommit=True, connect_timeout=10)


def create_database(admin_url: str, name: str, template: str | None = None) -> str:
    """Create database ``name`` next to ``admin_url``'s, a copy of database ``template``
    when one is named; its URL."""
    import psycopg

    copy = f' TEMPLATE "{template}"' if template else ""
    deadline = time.monotonic() + 10
    with _admin(admin_url) as admin:
        while True:
            try:
                admin.execute(f'CREATE DATABASE "{name}"{copy}')
                break
            except psycopg.errors.ObjectInUse:
                # The template's last client (a manage.py just ended) is still leaving.
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
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
def temporary_database(
    prefix: str, admin_url: str = POSTGRES_URL, migrated: bool = False
) -> Iterator[str]:
    """A new database named ``PREFIX_<random>``, empty or ``migrated`` (as ``manage.py
    migrate`` leaves it); yields its URL, drops it afterwards."""
    name = f"{prefix}_{secrets.token_hex(4)}"
    url = create_database(admin_url, name, migrated_template(admin_url) if migrated else None)
    try:
        yield url
    finally:
        drop_database(admin_url, name)


_templates: dict[str, str] = {}


def migrated_template(admin_url: str = POSTGRES_URL) -> str:
    """The name of a database that ``manage.py migrate`` made once in this process, dropped
    when the process ends: a copy of it (``CREATE DATABASE ... TEMPLATE``, milliseconds)
    holds what a migrate of each new database would (seconds of Django start-up and
    migrations each time)."""
    if admin_url not in _templates:
        from testsupport.processes import run_manage_py

        name = f"migrated_template_{secrets.token_hex(4)}"
        url = create_database(admin_url, name)
        try:
            run_manage_py("migrate", "--noinput", env={"DATABASE_URL": url})
        except BaseException:
            drop_database(admin_url, name)
            raise
        atexit.register(drop_database, admin_url, name)
        _templates[admin_url] = name
    return _templates[admin_url]
