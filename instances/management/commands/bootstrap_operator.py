from __future__ import annotations

import secrets
from typing import Any

from django.contrib.auth import get_user_model
from django.core.management.base import BaseCommand


class Command(BaseCommand):
    help = "Create the operator account if missing and print its login (the password only when created)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--username", default="operator")
        parser.add_argument("--email", default="operator@localhost")

    def handle(self, *args: Any, **options: Any) -> None:
        User = get_user_model()
        username = options["username"]
        if User.objects.filter(username=username).exists():
            self.stdout.write(
                f"Operator account: {username} (password as printed when it was created; "
                f"reset with `python manage.py changepassword {username}`)"
            )
            return
        password = secrets.token_urlsafe(12)
        User.objects.create_superuser(username=username, email=options["email"], password=password)
        # Printed to the operator's terminal once, on purpose; never logged.
        self.stdout.write(f"Operator account created: username {username}  password {password}")
