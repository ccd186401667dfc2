from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from templates_app.catalog import SSHD_CAPS
from templates_app.models import Template


class Command(BaseCommand):
    help = (
        "Add the local demo template (gpucloud-test/sshd, built by scripts/build-test-image) so the "
        "quick start can launch an instance on a machine that reaches no image registry."
    )

    def handle(self, *args: Any, **options: Any) -> None:
        _, created = Template.objects.get_or_create(
            slug="debian-ssh-demo",
            defaults={
                "name": "Debian + SSH (local demo)",
                "category": Template.Category.BASE,
                "description": "A local Debian image with sshd and a token-protected web page: for trying the "
                "product on a machine without a registry.",
                "image": "gpucloud-test/sshd:latest",
                "ports": [
                    {"name": "ssh", "port": 22, "protocol": "tcp"},
                    {"name": "jupyter", "port": 8888, "protocol": "http"},
                ],
                "access_methods": ["ssh", "jupyter"],
                "cap_add": SSHD_CAPS,
                "sort_order": 90,
            },
        )
        self.stdout.write("Demo template debian-ssh-demo " + ("added." if created else "already present."))
