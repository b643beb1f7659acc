"""``ours`` with its metrics off (``--impls ours,ours-nometrics`` measures their cost)."""

from bench.apps.settings_ours import *  # noqa: F403

CONSUMERS_METRICS = False
