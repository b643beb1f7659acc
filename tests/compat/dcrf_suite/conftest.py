"""Settings for djangochannelsrestframework's own tests, run on django-consumers.

Copied next to the library's tests by ``tests/compat/test_djangochannelsrestframework.py``;
``channels`` is this project through ``channels_shim``. No test of the suite meets a
deliberate difference from Channels.
"""

import gc
import os

import channels_shim
import pytest
from django.conf import settings


def pytest_configure(config):
    channels_shim.install()
    settings.configure(
        INSTALLED_APPS=(
            "django.contrib.auth",
            "django.contrib.contenttypes",
            "django.contrib.sessions",
            "consumers",
            "tests",
        ),
        SECRET_KEY="not secret",
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.sqlite3",
                "NAME": os.environ["DCRF_DATABASE"],
                "TEST": {"NAME": os.environ["DCRF_DATABASE"]},
            }
        },
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels.layers.InMemoryChannelLayer",
                "TEST_CONFIG": {"expiry": 100500},
            },
        },
        CONSUMERS_GC_FREEZE=False,
        USE_TZ=True,
    )


@pytest.fixture(autouse=True)
def _dead_consumer_classes_collected():
    """Collect the consumer classes each test defined once it ends, as if a full collection
    ran there: the library binds a model observer per consumer class, connected to Django's
    signals until its class is garbage, and several tests name their class ``TestConsumer``,
    so a class left from ``test_multiple_changes_within_transaction`` sends a second
    notification to ``test_observer_model_instance_mixin``'s groups until the collector
    happens to run. Real Channels 4.3.2 fails the same way when no collection falls between
    the two tests."""
    yield
    gc.collect()
