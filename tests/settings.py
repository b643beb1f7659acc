"""The settings of a test run: the project's production settings, given what a machine
without a deployment lacks.

The environment is set before the project's settings are read, and every server process a
test starts inherits it: a random SECRET_KEY for this run (the project refuses to start
without one when DEBUG is off) and ``DJANGO_HTTPS=0``, since tests speak plain HTTP on
loopback. A test that needs the HTTPS settings (``check --deploy``) sets its own.
"""

import os
import secrets

os.environ.setdefault("DJANGO_SECRET_KEY", secrets.token_urlsafe(50))
os.environ.setdefault("DJANGO_HTTPS", "0")

from project.settings import *  # noqa: F403
