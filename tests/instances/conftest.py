"""Fixtures of the lifecycle suites: the test image's template, SSH, waiting, cleanup.

Containers and networks are found by the label `gpucloud.host=<this test host>`, so
these suites never touch another run's containers on the same Docker engine.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from tests.containers import docker, labelled_containers
from tests.factories import TemplateFactory
from tests.objectstore import SeaweedServer, store_env


def _remove_everything_of_this_host() -> None:
    ids = labelled_containers()
    if ids:
        docker("rm", "-f", *ids, check=False)
    label = f"label=gpucloud.host={settings.GPUCLOUD_HOST_NAME}"
    networks = docker("network", "ls", "-q", "--filter", label).split()
    if networks:
        docker("network", "rm", *networks, check=False)


@pytest.fixture(autouse=True)
def _no_containers_left() -> Iterator[None]:
    yield
    _remove_everything_of_this_host()


@pytest.fixture
def sshd_template(db):
    """The test image: sshd on 22 and a token-checked HTTP service on 8888."""
    return TemplateFactory()


@pytest.fixture(scope="session")
def object_store() -> Iterator[SeaweedServer]:
    """A real S3 server (SeaweedFS on 127.0.0.1:31950-31957) for the whole session."""
    server = SeaweedServer(Path(settings.VAR_DIR) / "seaweedfs" / "data")
    server.remove()
    server.start()
    yield server
    server.remove()


@pytest.fixture
def s3_snapshots(object_store, settings) -> SeaweedServer:
    """Snapshots taken in this test go to the S3 server (workers reach it: tests.objectstore.store_env)."""
    settings.GPUCLOUD_SNAPSHOT_STORE = "s3"
    for name, value in store_env().items():
        setattr(settings, name, int(value) if value.isdigit() else value)
    if object_store.proc is None:  # a test that killed it failed before bringing it back
        object_store.start()
    return object_store
