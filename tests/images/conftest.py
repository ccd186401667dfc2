from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.registry import Registry, registry_start


@pytest.fixture(scope="session")
def registry() -> Iterator[Registry]:
    """A plain registry on loopback, once per test session."""
    started = registry_start()
    yield started
    started.stop()


@pytest.fixture(scope="session")
def auth_registry() -> Iterator[Registry]:
    """A registry that demands a basic-auth login, once per test session."""
    started = registry_start(auth=True)
    yield started
    started.stop()
