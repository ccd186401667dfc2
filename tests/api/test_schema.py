"""The contract: schemathesis against the live schema, on a real server and database.

The app is served by pytest-django's live_server (a real HTTP server in a thread, on
the test database); requests carry a real API token of a test user; examples are
bounded. Every response must be no 5xx and conform to the schema (status, content
type, headers, body).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from http import HTTPStatus

import pytest
import requests
import schemathesis
from django.conf import settings
from hypothesis import HealthCheck, given
from hypothesis import settings as hypothesis_settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from instances import services
from instances.access.sshkeys import sshkey_create
from instances.access.tokens import token_create
from tests.api.keygen import ed25519_pub
from tests.factories import TemplateFactory, UserFactory

EXAMPLES = 15
CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]


def _containers() -> list[str]:
    out = subprocess.run(
        ["docker", "ps", "-aq", "--filter", f"label=gpucloud.host={settings.GPUCLOUD_HOST_NAME}"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    return out.stdout.split()


@pytest.fixture
def fuzz_world(transactional_db, this_host, settings) -> Iterator[str]:
    """A staff user (so the catalog's writes are fuzzed too) with an instance, a key and a token."""
    # Throttles would answer 429 to a fuzzer's burst; they have their own tests.
    settings.REST_FRAMEWORK = {**settings.REST_FRAMEWORK, "DEFAULT_THROTTLE_RATES": {}}
    user = UserFactory(username="fuzz", is_staff=True)
    # An image that does not exist: if a worker runs, a fuzzed launch fails fast.
    TemplateFactory(slug="pytorch", name="PyTorch", image="gpucloud-test/absent:none")
    services.instance_launch(user=user, template="pytorch", gpu_type="rtx-pro-6000", storage_gb=20, access=["ssh"])
    sshkey_create(user=user, public_key=ed25519_pub("fuzz"))
    _, key = token_create(user=user, name="fuzz")
    yield key
    for container in _containers():
        subprocess.run(["docker", "rm", "-f", container], capture_output=True, check=False, timeout=60)


def _fuzz(operation, *, mode: GenerationMode, token: str) -> None:
    @given(case=operation.as_strategy(generation_mode=mode))
    @hypothesis_settings(
        max_examples=EXAMPLES,
        deadline=None,
        derandomize=True,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case) -> None:
        # ?wait blocks up to two minutes by design; it is tested on a real launch instead.
        if case.query:
            case.query.pop("wait", None)
        case.call_and_validate(headers={"Authorization": f"Token {token}"}, checks=CHECKS, timeout=60)

    run()


def test_the_api_honours_its_schema(live_server, fuzz_world):
    """Every operation, valid and invalid inputs: no 5xx, every response as the schema says.

    (schemathesis's pytest loader does not run on pytest 9, so operations are driven
    here with its Python API: one hypothesis run per operation and mode.)
    """
    schema = schemathesis.openapi.from_url(f"{live_server.url}/api/schema/", timeout=30)
    failures = []
    # The customer API of instances, keys, tokens and the catalog; other apps' routes
    # (billing) are fuzzed by their own suites.
    operations = [r.ok() for r in schema.get_all_operations() if r.ok().path.startswith("/api/gpu/")]
    assert len(operations) >= 20
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            try:
                _fuzz(operation, mode=mode, token=fuzz_world)
            except Unsatisfiable:
                # Nothing to make invalid (a free-form path id and no body): no negative cases.
                assert mode == GenerationMode.NEGATIVE, operation.path
            except BaseException as exc:  # collect them all (schemathesis raises groups), then report
                if isinstance(exc, KeyboardInterrupt):
                    raise
                failures.append(f"{operation.method.upper()} {operation.path} ({mode.value}): {exc}"[:3000])
    assert not failures, "\n\n".join(failures)


def test_the_schema_and_the_docs_are_served_without_a_cdn(live_server, db):
    schema_response = requests.get(f"{live_server.url}/api/schema/?format=json", timeout=30)
    assert schema_response.status_code == HTTPStatus.OK
    paths = schema_response.json()["paths"]
    for path in (
        "/api/gpu/instances",
        "/api/gpu/instances/{id}",
        "/api/gpu/instances/{id}/stop",
        "/api/gpu/instances/{id}/start",
        "/api/gpu/instances/{id}/restart",
        "/api/gpu/instances/{id}/events",
        "/api/gpu/instances/{id}/logs",
        "/api/gpu/templates",
        "/api/gpu/availability",
        "/api/gpu/ssh-keys",
    ):
        assert path in paths, path
    docs = requests.get(f"{live_server.url}/api/docs/", timeout=30)
    assert docs.status_code == HTTPStatus.OK
    assert "swagger-ui" in docs.text
    assert "cdn." not in docs.text
    assert "unpkg" not in docs.text
    bundle = next(line for line in docs.text.split('"') if line.endswith("swagger-ui-bundle.js"))
    assert requests.get(f"{live_server.url}{bundle}", timeout=30).status_code == HTTPStatus.OK


def test_the_schema_is_valid_openapi_without_warnings(tmp_path):
    from django.core.management import call_command

    # --fail-on-warn: a warning (an operationId collision, an unresolvable type) fails.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yaml"))
    assert "/api/gpu/instances/{id}/restart:" in (tmp_path / "schema.yaml").read_text()
