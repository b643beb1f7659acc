"""database_sync_to_async: ORM calls off the event loop, without stale connections."""

import threading

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from consumers.db import database_sync_to_async


@pytest.mark.django_db(transaction=True)
async def test_runs_orm_code_on_the_pool_not_the_event_loop():
    @database_sync_to_async
    def create_and_count():
        get_user_model().objects.create_user("ada")
        return threading.current_thread().name, get_user_model().objects.count()

    thread, count = await create_and_count()
    assert thread.startswith("consumers-sync")
    assert count == 1


@pytest.mark.django_db(transaction=True)
async def test_closes_connections_past_their_max_age_after_the_call():
    # CONN_MAX_AGE is 0 in the project settings: a connection is done after each call.

    @database_sync_to_async
    def query_and_keep_connection():
        get_user_model().objects.exists()
        assert connection.connection is not None
        return connection

    used = await query_and_keep_connection()
    assert used.connection is None


@pytest.mark.django_db(transaction=True)
async def test_decorator_form_and_thread_sensitive_option():
    @database_sync_to_async(thread_sensitive=True)
    def where():
        return threading.current_thread().name

    assert not (await where()).startswith("consumers-sync")
