"""Every list of the API pages with a bounded limit and a bounded offset (issue 16, part 8),
and an environment variable's name is checked whole."""

from __future__ import annotations

from http import HTTPStatus

import pytest

from gpucloud.pagination import MAX_LIMIT, MAX_OFFSET
from instances.access.tokens import token_create
from instances.models import Instance
from tests.api.helpers import launch

LISTS = [
    "/api/gpu/instances",
    "/api/gpu/instances/{instance}/events",
    "/api/gpu/ssh-keys",
    "/api/gpu/tokens",
    "/api/gpu/templates",
    "/api/billing/ledger",
    "/api/billing/usage",
]


@pytest.mark.parametrize("path", LISTS)
@pytest.mark.parametrize("offset", [str(MAX_OFFSET + 1), "99999999999999999999", str(10**40)])
def test_an_offset_past_the_bound_is_a_400_not_a_500(alice_api, alice, ready, path, offset):
    url = path.format(instance=launch(alice).public_id)
    response = alice_api.get(f"{url}?offset={offset}")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == "invalid-request"
    assert "offset" in response.json()["error"]["detail"]


@pytest.mark.parametrize("path", LISTS)
def test_an_offset_past_the_end_within_the_bound_is_an_empty_page(alice_api, alice, ready, path):
    url = path.format(instance=launch(alice).public_id)
    response = alice_api.get(f"{url}?offset={MAX_OFFSET}")
    assert response.status_code == HTTPStatus.OK
    assert response.json()["results"] == []


@pytest.mark.parametrize("path", LISTS)
def test_a_limit_is_capped(alice_api, alice, ready, path):
    url = path.format(instance=launch(alice).public_id)
    # The previous page's link carries the limit the page was served with.
    body = alice_api.get(f"{url}?limit={MAX_LIMIT * 10}&offset=1").json()
    assert f"limit={MAX_LIMIT}&" in body["previous"] or body["previous"].endswith(f"limit={MAX_LIMIT}")


def test_a_long_list_is_cut_at_the_maximum_limit(alice_api, alice):
    for _ in range(MAX_LIMIT + 1 - alice.api_tokens.count()):
        token_create(user=alice)
    body = alice_api.get(f"/api/gpu/tokens?limit={MAX_LIMIT * 10}").json()
    assert (body["count"], len(body["results"])) == (MAX_LIMIT + 1, MAX_LIMIT)


@pytest.mark.parametrize("name", ["A\n", "OK\n", "MY_VAR\n"])
def test_an_env_name_with_a_trailing_newline_is_refused(alice_api, ready, name):
    launch_body = {"template": "test-sshd", "gpu": "rtx-5090", "storage": 20, "access": ["ssh"], "env": {name: "x"}}
    response = alice_api.post("/api/gpu/instances", launch_body, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    assert response.json()["error"]["code"] == "instances:invalid-env"
    assert not Instance.objects.exists()
