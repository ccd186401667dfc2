"""Fixtures of the lifecycle suites: the test image's template, SSH, waiting, cleanup.

Containers and networks are found by the label `gpucloud.host=<this test host>`, so
these suites never touch another run's containers on the same Docker engine.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.conf import settings

from tests.containers import docker, labelled_containers
from tests.factories import TemplateFactory


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
