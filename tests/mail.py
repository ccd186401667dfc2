"""Emails a test Celery worker sent (its file backend, tests/processes.worker_env)."""

from __future__ import annotations

import email
import shutil
from email.message import Message

from django.conf import settings

from tests.processes import worker_mail_dir


def _folder():
    return worker_mail_dir(settings.DATABASES["default"]["NAME"])


def worker_mail_clear() -> None:
    shutil.rmtree(_folder(), ignore_errors=True)


def worker_mails() -> list[Message]:
    """Every message the worker wrote, oldest first (one file per connection, messages
    separated by a line of 79 dashes)."""
    folder = _folder()
    if not folder.exists():
        return []
    found = []
    for path in sorted(folder.iterdir(), key=lambda p: p.stat().st_mtime):
        for chunk in path.read_bytes().split(b"-" * 79 + b"\n"):
            if chunk.strip():
                found.append(email.message_from_bytes(chunk.lstrip()))
    return found


def parts(message: Message) -> dict[str, str]:
    """{content type: decoded text} of a message's parts."""
    found = {}
    for part in message.walk():
        if part.get_content_maintype() == "text":
            payload = part.get_payload(decode=True)
            found[part.get_content_type()] = payload.decode() if isinstance(payload, bytes) else str(payload)
    return found
