"""The hub's own settings, with one extra endpoint: a bare DRF view (the benchmark's floor).

Importable from any checkout of the hub (``bench/intake_vs_bare.py --tree``): put this
folder on the Python path and set ``DJANGO_SETTINGS_MODULE=bench_bare_settings``.
"""

from hub.settings import *  # noqa: F403

ROOT_URLCONF = "bench_bare_urls"
