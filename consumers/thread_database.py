"""Which threads ever opened a Django database connection (``connection_created``): only
those have connections for ``consumers.threads.close_old_connections_here`` to check."""

from __future__ import annotations

import threading
from typing import Any

from django.db.backends.signals import connection_created


class _ThreadDatabase(threading.local):
    """Whether this thread ever opened a database connection; a class default, as a missing
    attribute of a thread-local costs an exception to read."""

    opened = False


database = _ThreadDatabase()


def _opened(sender: Any, connection: Any, **kwargs: Any) -> None:
    database.opened = True


connection_created.connect(_opened, dispatch_uid="consumers.threads.opened")
