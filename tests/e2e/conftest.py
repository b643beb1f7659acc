"""Fixtures of the browser tests' deployment (tests/e2e/test_chat_browser.py's ``site``)."""

import pytest

from tests.redis_servers import REDIS_URL


@pytest.fixture
def redis_url():
    """The deployment's Redis: the machine's (a test module may give its own)."""
    return REDIS_URL
