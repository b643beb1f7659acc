"""The consumer framework: consumers, routing, middleware, auth, testing and workers.

Nothing here needs ``"consumers"`` in ``INSTALLED_APPS``: in a Daphne process, importing
this package adapts Daphne (``consumers.daphne``). Installing the app adds the
``runworker`` command, the system check ``consumers.W001`` (a Daphne whose shape differs
from the tested one) and ``gc.freeze()`` of the start-up objects
(``CONSUMERS_GC_FREEZE``).
"""

import sys

if "daphne.server" in sys.modules:
    # Daphne imports its server before the application, however it is started.
    from consumers.daphne import install as _adapt_daphne

    _adapt_daphne()
