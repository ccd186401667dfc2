"""Clients of the API as the cast: each authenticated with a real API token."""

from __future__ import annotations

import pytest
import redis
from django.conf import settings
from rest_framework.test import APIClient

from tests.api.helpers import token_client
from tests.factories import TemplateFactory


def _clear_throttles() -> None:
    # Only throttle counters: the same Redis database is the Celery broker.
    client = redis.Redis.from_url(settings.REDIS_URL)
    for key in client.scan_iter(match="*throttle*"):
        client.delete(key)


@pytest.fixture(autouse=True)
def _fresh_throttles():
    """Throttle counters live in the real Redis cache: each test starts with none."""
    _clear_throttles()
    yield
    _clear_throttles()


@pytest.fixture
def alice_api(alice) -> APIClient:
    return token_client(alice)


@pytest.fixture
def bob_api(bob) -> APIClient:
    return token_client(bob)


@pytest.fixture
def olga_api(olga) -> APIClient:
    return token_client(olga)


@pytest.fixture
def template(db):
    return TemplateFactory()


@pytest.fixture
def ready(this_host, template):
    """This host with its two simulated GPUs and the test template."""
    return this_host
