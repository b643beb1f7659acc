"""The consumer framework: consumers, routing, middleware, auth, testing and workers.

Add ``"consumers"`` to ``INSTALLED_APPS`` for the ``runworker`` command and the system checks.
"""
