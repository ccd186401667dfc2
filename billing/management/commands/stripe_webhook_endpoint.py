"""Register the Stripe webhook endpoint dj-stripe verifies signatures against.

    STRIPE_WEBHOOK_SECRET=whsec_... python manage.py stripe_webhook_endpoint --id we_123 --base-url https://gpu.example.com

Creates or updates the WebhookEndpoint row with the signing secret Stripe shows for
the endpoint, and prints the URL to configure at Stripe. The secret is read from the
environment so it stays out of shell history, and is never printed.
"""

from __future__ import annotations

import os

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.urls import reverse

EVENTS = [
    "payment_intent.succeeded",
    "charge.refunded",
    "refund.created",
    "refund.updated",
    "charge.dispute.created",
    "charge.dispute.funds_withdrawn",
    "charge.dispute.closed",
]


class Command(BaseCommand):
    help = "Create or update the Stripe webhook endpoint row (secret from STRIPE_WEBHOOK_SECRET)."

    def add_arguments(self, parser) -> None:
        parser.add_argument("--id", default="we_gpucloud", help="The endpoint's id at Stripe (we_...).")
        parser.add_argument(
            "--base-url", required=True, help="Public base URL of this site, e.g. https://gpu.example.com"
        )

    def handle(self, *args, **options) -> None:
        from djstripe.models import WebhookEndpoint

        secret = os.environ.get("STRIPE_WEBHOOK_SECRET", "")
        if not secret.startswith("whsec_"):
            raise CommandError("Set STRIPE_WEBHOOK_SECRET to the endpoint's signing secret (whsec_...).")
        endpoint, created = WebhookEndpoint.objects.update_or_create(
            id=options["id"],
            defaults={
                "secret": secret,
                "enabled_events": EVENTS,
                "status": "enabled",
                "livemode": settings.STRIPE_LIVE_MODE,
                "url": options["base_url"].rstrip("/") + "/stripe/webhook/",
            },
        )
        path = reverse("djstripe:djstripe_webhook_by_uuid", kwargs={"uuid": endpoint.djstripe_uuid})
        endpoint.url = options["base_url"].rstrip("/") + path
        endpoint.save(update_fields=["url"])
        self.stdout.write(
            f"{'Created' if created else 'Updated'} {endpoint.id}. At Stripe, send {', '.join(EVENTS)} to:"
        )
        self.stdout.write(endpoint.url)
