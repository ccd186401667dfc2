"""Images kept warm: operators pull the enabled templates' images onto hosts from the
admin, beat does it periodically, and admin → Host images shows what each host holds."""

from __future__ import annotations

import re
from http import HTTPStatus

import pytest
from django.urls import reverse

from instances.models import Host
from instances.registry_models import HostImage
from instances.tasks import images_warm_all_hosts
from tests.factories import TemplateFactory
from tests.processes import wait_until
from tests.registry import image_present, image_push_fresh, image_remove

pytestmark = [pytest.mark.docker, pytest.mark.celery]


def _row(host: Host, image: str) -> HostImage | None:
    return HostImage.objects.filter(host=host, image=image, checked_at__isnull=False).first()


def test_an_operator_warms_a_host_from_the_admin_and_sees_what_it_holds(
    celery_worker, this_host, olga, client, registry
):
    wanted = image_push_fresh(registry=registry, name="warm")
    unwanted = image_push_fresh(registry=registry, name="disabled")
    TemplateFactory(slug="warm", image=wanted)
    TemplateFactory(slug="disabled", image=unwanted, enabled=False)
    client.force_login(olga)
    try:
        response = client.post(
            reverse("admin:instances_host_changelist"), {"action": "warm_images", "_selected_action": [this_host.pk]}
        )
        assert response.status_code == HTTPStatus.FOUND
        row = wait_until(lambda: _row(this_host, wanted), timeout=120, what="the warm-up of the host")
        assert row.present
        assert row.size_bytes > 24 * 1024 * 1024
        assert row.error == ""
        assert image_present(wanted)
        assert not image_present(unwanted)  # a disabled template's image is left alone
        assert not HostImage.objects.filter(image=unwanted).exists()
        page = client.get(reverse("admin:instances_hostimage_changelist"))
        assert page.status_code == HTTPStatus.OK
        assert wanted.encode() in page.content
        assert re.search(rb"\d(\xc2\xa0|&nbsp;| )[MG]B\b", page.content)  # its size (filesizeformat)
    finally:
        image_remove(wanted)
        image_remove(unwanted)


def test_the_periodic_job_pulls_what_a_host_lacks_and_records_a_refused_pull(celery_worker, this_host, registry):
    kept = image_push_fresh(registry=registry, name="kept")
    missing = f"{registry.address}/gpucloud-test/never-pushed:warm"
    TemplateFactory(slug="kept", image=kept)
    TemplateFactory(slug="missing", image=missing)
    try:
        assert images_warm_all_hosts.apply().get() == 1  # one host not offline: this one
        row = wait_until(lambda: _row(this_host, kept), timeout=120, what="the periodic warm-up")
        assert row.present
        assert image_present(kept)
        failed = wait_until(lambda: _row(this_host, missing), timeout=60, what="the refused pull's row")
        assert not failed.present
        assert "never-pushed" in failed.error
    finally:
        image_remove(kept)
