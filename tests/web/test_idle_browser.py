"""The idle warning banner, keep-alive and the notifications page in a real browser,
against a live server, a real worker and a real container; screenshots of the banner
and the webhook page (docs/screenshots/14-idle-warning.png, 15-webhooks.png)."""

from __future__ import annotations

import re
import time

import pytest
from django.conf import settings
from django.test import Client
from playwright.sync_api import Page, expect

from instances.host import gpus
from instances.idle_models import IdleRule
from instances.models import InstanceEvent
from instances.notify.models import WebhookDelivery
from instances.services import instance_launch
from instances.tasks import idle_check_host
from tests.containers import docker, labelled_containers, wait_for_status
from tests.factories import TemplateFactory
from tests.notify.receiver import Receiver, serve

pytestmark = [pytest.mark.browser, pytest.mark.docker, pytest.mark.celery]

WINDOW = 40  # seconds: warned after 20 s idle, stopped after 40 s


def _signed_in(page: Page, user, base: str) -> None:
    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME].value
    page.context.add_cookies([{"name": settings.SESSION_COOKIE_NAME, "value": cookie, "url": base}])


def test_the_warning_banner_keeps_alive_and_the_webhook_page_shows_the_log(
    page: Page, live_server, celery_worker, alice, this_host, shoot
):
    receiver = Receiver()
    server = serve(receiver)
    template = TemplateFactory()
    IdleRule.objects.create(template=template, idle_seconds=WINDOW, gpu_threshold_percent=10)
    base = live_server.url
    _signed_in(page, alice, base)
    try:
        # A webhook, added on the page: its secret is shown once.
        page.goto(f"{base}/notifications/")
        page.fill("#hook-url", receiver.url)
        page.fill("#hook-desc", "training alerts")
        page.click("text=Add webhook")
        expect(page.get_by_test_id("new-secret")).to_contain_text("whsec_")

        instance = instance_launch(user=alice, template=template, gpu_type="rtx-5090", storage_gb=20, access=["ssh"])
        instance = wait_for_status(instance, "running", "failed")
        assert instance.status == "running", instance.last_error
        gpus.simulated_utilization_set(
            directory=settings.GPUCLOUD_SIMULATED_UTILIZATION_DIR, uuid=instance.gpu.uuid, percent=0
        )
        deadline = time.monotonic() + 60
        while not instance.events.filter(kind=InstanceEvent.Kind.IDLE_WARNING).exists():
            assert time.monotonic() < deadline, "no idle warning"
            idle_check_host.apply_async(kwargs={"host_id": this_host.pk}, queue=this_host.queue)
            time.sleep(1)

        page.goto(f"{base}/instances/{instance.public_id}/")
        banner = page.locator(".idle-banner[data-warning=idle]")
        expect(banner).to_contain_text(re.compile(r"this instance stops in \d+ s"))
        shoot(page, "14-idle-warning")
        banner.get_by_role("button", name="Keep alive").click()
        expect(page.locator(".flash.success")).to_contain_text("Kept alive until")
        expect(page.locator(".idle-banner")).to_have_count(0)
        assert instance.events.filter(kind=InstanceEvent.Kind.KEEP_ALIVE, actor=alice).exists()

        # The warning went to the webhook too: the page's log shows its HTTP status.
        deadline = time.monotonic() + 30
        while not WebhookDelivery.objects.filter(status="succeeded", event="instance.idle_warning").exists():
            assert time.monotonic() < deadline, "no delivery of the warning"
            time.sleep(0.5)
        page.goto(f"{base}/notifications/")
        row = page.locator("tr[data-delivery]", has_text="instance.idle_warning").first
        expect(row).to_contain_text("Succeeded")
        expect(row).to_contain_text("200")
        shoot(page, "15-webhooks")
    finally:
        for gpu in this_host.gpus.all():
            gpus.simulated_utilization_set(
                directory=settings.GPUCLOUD_SIMULATED_UTILIZATION_DIR, uuid=gpu.uuid, percent=None
            )
        ids = labelled_containers()
        if ids:
            docker("rm", "-f", *ids, check=False)
        server.shutdown()
        server.server_close()
