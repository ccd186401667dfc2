"""dj-stripe's migrations are squashed in gpucloud/migrations/djstripe (MIGRATION_MODULES):
the squash must replace exactly the migrations the installed dj-stripe ships, or an upgrade
of dj-stripe would skip its new ones. When this fails after an upgrade, make the squash again:
remove gpucloud/migrations/djstripe/0001_*.py, run `manage.py makemigrations djstripe`, rename
it 0001_squashed_<last>.py and set its `replaces` to dj-stripe's migrations."""

from __future__ import annotations

from pathlib import Path

import djstripe
from django.db.migrations.loader import MigrationLoader

from gpucloud.migrations.djstripe import __path__ as squash_path


def test_the_squash_replaces_every_migration_dj_stripe_ships():
    shipped = sorted(p.stem for p in (Path(djstripe.__file__).parent / "migrations").glob("0*.py"))
    squashes = sorted(Path(squash_path[0]).glob("0*.py"))
    assert len(squashes) == 1
    loader = MigrationLoader(None, ignore_no_migrations=True)
    squash = loader.disk_migrations[("djstripe", squashes[0].stem)]
    assert sorted(name for _, name in squash.replaces) == shipped
    assert len(shipped) >= 3
