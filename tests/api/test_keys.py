"""SSH keys: parsed for real, normalised, per user; garbage and weak keys refused."""

from __future__ import annotations

import subprocess
from http import HTTPStatus
from urllib.parse import urlencode

import pytest

from instances.access.sshkeys import sshkey_create, sshkey_parse, sshkeys_resolve
from instances.errors import InvalidSSHKey
from instances.models import SSHKey
from tests.api.keygen import dsa_pub, ecdsa_pub, ed25519_pub, rsa_pub


def test_the_fingerprint_is_the_one_ssh_keygen_prints(tmp_path):
    key = ed25519_pub("alice@laptop")
    (tmp_path / "k.pub").write_text(key + "\n")
    out = subprocess.run(["ssh-keygen", "-lf", str(tmp_path / "k.pub")], capture_output=True, text=True, check=True)
    parsed = sshkey_parse(public_key=key)
    assert out.stdout.split()[1] == parsed.fingerprint
    assert parsed.fingerprint.startswith("SHA256:")
    assert (parsed.key_type, parsed.bits, parsed.comment) == ("ssh-ed25519", 256, "alice@laptop")


@pytest.mark.parametrize(
    ("make", "key_type", "bits"),
    [(lambda: rsa_pub(3072), "ssh-rsa", 3072), (ecdsa_pub, "ecdsa-sha2-nistp256", 256)],
)
def test_it_reads_the_type_and_size_of_rsa_and_ecdsa_keys(make, key_type, bits):
    parsed = sshkey_parse(public_key=make())
    assert (parsed.key_type, parsed.bits) == (key_type, bits)


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("", "empty"),
        ("hello world", "not an OpenSSH public key"),
        ("ssh-ed25519 !!!notbase64", "base64"),
        ("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAAA", "could not be read"),
        ("-----BEGIN OPENSSH PRIVATE KEY-----", "PEM"),
    ],
)
def test_it_refuses_garbage_with_a_clear_message(text, says):
    with pytest.raises(InvalidSSHKey) as exc:
        sshkey_parse(public_key=text)
    assert says in exc.value.message


def test_it_refuses_rsa_under_2048_bits_and_dsa():
    with pytest.raises(InvalidSSHKey, match="1024 bits; at least 2048"):
        sshkey_parse(public_key=rsa_pub(1024))
    with pytest.raises(InvalidSSHKey, match="DSA"):
        sshkey_parse(public_key=dsa_pub())


def test_a_type_that_does_not_match_the_data_is_refused():
    _, b64 = ed25519_pub().split()[:2]
    with pytest.raises(InvalidSSHKey):
        sshkey_parse(public_key=f"ssh-rsa {b64}")


def test_no_second_line_or_options_prefix_can_reach_authorized_keys():
    key = ed25519_pub("x")
    with pytest.raises(InvalidSSHKey, match="one line"):
        sshkey_parse(public_key=key + "\nssh-ed25519 AAAA evil")
    with pytest.raises(InvalidSSHKey):
        sshkey_parse(public_key='command="rm -rf /" ' + key)
    # A comment keeps printable characters only.
    assert "\t" not in sshkey_parse(public_key=key + "\tbad\x7fcomment").normalized


def test_duplicates_and_reused_names_are_refused(alice, bob):
    key = ed25519_pub("laptop")
    saved = sshkey_create(user=alice, public_key=key)
    assert saved.name == "laptop"
    with pytest.raises(InvalidSSHKey, match="already saved as 'laptop'"):
        sshkey_create(user=alice, public_key=key, name="other")
    with pytest.raises(InvalidSSHKey, match="already have a key named"):
        sshkey_create(user=alice, public_key=ed25519_pub(), name="laptop")
    # Another user may save the same key.
    assert sshkey_create(user=bob, public_key=key).fingerprint == saved.fingerprint


def test_launch_refs_resolve_to_my_keys_only(alice, bob):
    mine = sshkey_create(user=alice, public_key=ed25519_pub("a"))
    theirs = sshkey_create(user=bob, public_key=ed25519_pub("b"))
    raw = rsa_pub(2048, "raw")
    assert sshkeys_resolve(user=alice, refs=[str(mine.id), mine.fingerprint, raw]) == [mine.public_key, raw]
    for ref in (str(theirs.id), theirs.fingerprint):
        with pytest.raises(InvalidSSHKey, match="No saved SSH key of yours"):
            sshkeys_resolve(user=alice, refs=[ref])


def test_the_api_adds_lists_shows_and_deletes_my_keys(alice_api, alice):
    key = ed25519_pub("work")
    created = alice_api.post("/api/gpu/ssh-keys", {"public_key": key}, format="json")
    assert created.status_code == HTTPStatus.CREATED
    body = created.json()
    assert body["name"] == "work"
    assert body["key_type"] == "ssh-ed25519"
    assert body["bits"] == 256
    assert body["fingerprint"].startswith("SHA256:")

    listed = alice_api.get("/api/gpu/ssh-keys").json()
    assert [k["id"] for k in listed["results"]] == [body["id"]]
    by_fingerprint = alice_api.get(f"/api/gpu/ssh-keys/{body['fingerprint']}")
    assert by_fingerprint.json()["id"] == body["id"]

    assert alice_api.delete(f"/api/gpu/ssh-keys/{body['id']}").status_code == HTTPStatus.NO_CONTENT
    assert not SSHKey.objects.filter(owner=alice).exists()
    assert alice_api.delete(f"/api/gpu/ssh-keys/{body['id']}").status_code == HTTPStatus.NOT_FOUND


def test_delete_on_the_collection_takes_an_id_or_fingerprint(alice_api, alice):
    one = sshkey_create(user=alice, public_key=ed25519_pub("one"))
    two = sshkey_create(user=alice, public_key=ed25519_pub("two"))
    assert alice_api.delete(f"/api/gpu/ssh-keys?id={one.id}").status_code == HTTPStatus.NO_CONTENT
    response = alice_api.delete(f"/api/gpu/ssh-keys?{urlencode({'id': two.fingerprint})}")
    assert response.status_code == HTTPStatus.NO_CONTENT
    assert not SSHKey.objects.filter(owner=alice).exists()
    assert alice_api.delete("/api/gpu/ssh-keys").status_code == HTTPStatus.BAD_REQUEST


def test_the_api_explains_a_bad_key_in_the_error_shape(alice_api):
    response = alice_api.post("/api/gpu/ssh-keys", {"public_key": rsa_pub(1024)}, format="json")
    assert response.status_code == HTTPStatus.BAD_REQUEST
    error = response.json()["error"]
    assert error["code"] == "instances:invalid-ssh-key"
    assert "at least 2048" in error["message"]


def test_bob_cannot_see_or_delete_alices_key(alice, bob_api):
    key = sshkey_create(user=alice, public_key=ed25519_pub("a"))
    for path in (f"/api/gpu/ssh-keys/{key.id}", f"/api/gpu/ssh-keys/{key.fingerprint}"):
        assert bob_api.get(path).status_code == HTTPStatus.NOT_FOUND
        response = bob_api.delete(path)
        assert response.status_code == HTTPStatus.NOT_FOUND
        assert response.json()["error"]["code"] == "instances:not-found"
    assert bob_api.get("/api/gpu/ssh-keys").json()["results"] == []
    assert SSHKey.objects.filter(id=key.id).exists()
