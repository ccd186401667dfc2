"""Settings of bench/api.py: the product's settings plus one minimal JSON view to compare with."""

from __future__ import annotations

from gpucloud.settings import *  # noqa: F403

ROOT_URLCONF = "bench.api_urls"
