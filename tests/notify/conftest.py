from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.helpers import token_client
from tests.notify.receiver import Receiver, serve


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    """A webhook receiver on 127.0.0.1 (GPUCLOUD_WEBHOOK_ALLOW_LOOPBACK=1 in scripts/test)."""
    found = Receiver()
    server = serve(found)
    yield found
    server.shutdown()
    server.server_close()


@pytest.fixture
def alice_api(alice):
    return token_client(alice)


@pytest.fixture
def bob_api(bob):
    return token_client(bob)
