from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


# Test-only switches of other suites (the browser tests' async-unsafe ORM access) are
# not part of a production environment.
_NOT_PRODUCTION = ("DJANGO_ALLOW_ASYNC_UNSAFE",)


def _django_setup(env_overrides: dict[str, str], drop: tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in (*drop, *_NOT_PRODUCTION)}
    env.update(env_overrides)
    return subprocess.run(
        [sys.executable, "-c", "import django; django.setup(); print('started')"],
        cwd=ROOT,
        env={**env, "DJANGO_SETTINGS_MODULE": "gpucloud.settings"},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_production_mode_refuses_to_start_without_a_secret_key():
    result = _django_setup({"DEBUG": "0"}, drop=("SECRET_KEY",))
    assert result.returncode != 0
    assert "SECRET_KEY is not set" in result.stderr
    assert "started" not in result.stdout


def test_production_mode_refuses_a_weak_secret_key():
    result = _django_setup({"DEBUG": "0", "SECRET_KEY": "short"})
    assert result.returncode != 0
    assert "SECRET_KEY is too weak" in result.stderr


def test_production_mode_refuses_to_start_without_the_credentials_encryption_key():
    result = _django_setup({"DEBUG": "0", "SECRET_KEY": "x" * 60}, drop=("GPUCLOUD_ENCRYPTION_KEY",))
    assert result.returncode != 0
    assert "GPUCLOUD_ENCRYPTION_KEY is not set" in result.stderr


def test_production_mode_starts_with_its_secrets_and_passes_the_deploy_checks():
    env = {
        "DEBUG": "0",
        "SECRET_KEY": "k3y-" + "a1b2c3d4e5f6g7h8" * 4,
        "GPUCLOUD_ENCRYPTION_KEY": "q1lYb2Jqv0bq2Kx1w2uTt5k2JX8lQm4s3Yl8dXJpZ2U=",
        "ALLOWED_HOSTS": "gpucloud.example.com",
    }
    started = _django_setup(env)
    assert started.returncode == 0, started.stderr
    check = subprocess.run(
        [sys.executable, "manage.py", "check", "--deploy", "--fail-level", "WARNING"],
        cwd=ROOT,
        env={**{k: v for k, v in os.environ.items() if k not in _NOT_PRODUCTION}, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_quick_start_defaults_to_sqlite_and_the_filesystem_broker(tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-c",
            "import django; django.setup(); from django.conf import settings as s; "
            "print(s.DATABASES['default']['ENGINE'], s.CELERY_BROKER_URL)",
        ],
        cwd=ROOT,
        env={
            **{k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")},
            "DEBUG": "1",
            "GPUCLOUD_VAR_DIR": str(tmp_path),
            "DJANGO_SETTINGS_MODULE": "gpucloud.settings",
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["django.db.backends.sqlite3", "filesystem://"]
    assert (tmp_path / "broker" / "queue").is_dir()
