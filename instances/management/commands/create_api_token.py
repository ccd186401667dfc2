"""Make an API token for a user (created if missing): the token alone on the last line.

For automation: `TOKEN=$(python manage.py create_api_token ci-bot | tail -n1)`.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from instances.access.tokens import token_create


class Command(BaseCommand):
    help = "Create USERNAME if missing and print a new API token for it, alone on the last line."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("username")
        parser.add_argument("--staff", action="store_true", help="Make the user staff (may edit the catalog).")
        parser.add_argument("--name", default="cli", help="A name for the token, shown in token lists.")
        parser.add_argument(
            "--expires-days",
            type=int,
            default=None,
            help="The token stops working after this many days (default: never).",
        )

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["username"].strip()
        if not username:
            raise CommandError("USERNAME must not be empty.")
        days = options["expires_days"]
        if days is not None and days <= 0:
            raise CommandError("--expires-days must be a positive number of days.")
        expires_at = timezone.now() + timedelta(days=days) if days is not None else None
        with transaction.atomic():
            user, created = User.objects.get_or_create(username=username)
            if created:
                # No password: the account logs in by token only until one is set.
                user.set_unusable_password()
            if options["staff"]:
                user.is_staff = True
            user.save()
            token, key = token_create(user=user, name=options["name"], expires_at=expires_at)
        self.stdout.write(
            f"{'Created' if created else 'Existing'} user {username}{' (staff)' if user.is_staff else ''}; "
            f"token '{token.name}' ({token.prefix}…), "
            f"{'expires ' + expires_at.isoformat(timespec='minutes') if expires_at else 'never expires'}. "
            "It is shown once; store it now:"
        )
        # Printed to the operator's terminal on purpose, never logged.
        self.stdout.write(key)
