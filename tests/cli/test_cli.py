"""`gpucloud` against the live server: login, listings, errors as exit codes, and a real
instance reached with the real `ssh`, `scp` and `rsync`."""

from __future__ import annotations

import json
import stat
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest
from django.conf import settings

from billing import services as billing
from instances.access.tokens import token_create
from instances.models import GpuType, Instance
from tests.api.helpers import launch
from tests.billing.helpers import credit
from tests.factories import TemplateFactory

# The CLI's exit codes (cli/gpucloud_cli/client.py), restated: scripts rely on them.
EXIT_AUTH, EXIT_NOT_FOUND, EXIT_PAYMENT, EXIT_USAGE = 3, 4, 6, 2


def test_login_stores_the_token_0600_and_listings_read_the_api(run_cli, alice, alice_token, this_host, settings):
    settings.GPUCLOUD_ADMISSION_CHECKS = ["billing.checks.balance_covers_launch"]
    TemplateFactory()
    refused = run_cli("login", "--token", "not-a-token")
    assert refused.returncode == EXIT_AUTH, refused
    assert "error: " in refused.stderr
    assert not (run_cli.home / ".config" / "gpucloud" / "config.json").exists()

    done = run_cli("login", "--token", alice_token)
    assert done.returncode == 0, done.stderr
    stored = run_cli.home / ".config" / "gpucloud" / "config.json"
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    assert json.loads(stored.read_text())["token"] == alice_token
    assert alice_token not in done.stdout + done.stderr

    gpus = json.loads(run_cli("gpus", "--json").stdout)
    assert {g["sku"]: (g["free"], g["total"]) for g in gpus}["rtx-5090"] == (1, 1)
    table = run_cli("gpus").stdout.splitlines()
    assert table[0].split()[:3] == ["SKU", "DISPLAY_NAME", "FREE"]
    assert any(line.startswith("rtx-5090") for line in table[1:])

    assert "test-sshd" in [t["slug"] for t in json.loads(run_cli("templates", "--json").stdout)]
    assert json.loads(run_cli("balance", "--json").stdout)["balance_usd"] == "0.00"
    assert run_cli("ls").stdout.strip() == "(none)"
    assert json.loads(run_cli("ls", "--json").stdout) == []

    # The API's stable codes come through, with their exit codes.
    missing = run_cli("show", "inst_doesnotexist")
    assert missing.returncode == EXIT_NOT_FOUND
    assert missing.stderr.startswith("error: instances:not-found:")
    broke = run_cli("launch", "-t", "test-sshd", "-g", "rtx-5090", "-s", "20")
    assert broke.returncode == EXIT_PAYMENT
    assert "billing:insufficient-balance" in broke.stderr
    assert not Instance.objects.exists()
    bad = run_cli("launch", "-t", "test-sshd", "-g", "rtx-5090", "-s", "1")
    assert bad.returncode == EXIT_USAGE, bad
    assert bad.stderr.startswith("error: ")

    # GPUCLOUD_TOKEN wins over the stored login; logout forgets the file.
    assert run_cli("balance", env={"GPUCLOUD_TOKEN": "revoked"}).returncode == EXIT_AUTH
    assert run_cli("logout").returncode == 0
    assert not stored.exists()
    assert run_cli("balance").returncode == EXIT_AUTH
    assert run_cli("balance", env={"GPUCLOUD_TOKEN": alice_token}).returncode == 0


def _keygen(path: Path) -> Path:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True, timeout=30)
    return path


@pytest.fixture
def _no_containers_left():
    yield
    label = f"label=gpucloud.host={settings.GPUCLOUD_HOST_NAME}"
    ids = subprocess.run(["docker", "ps", "-aq", "--filter", label], capture_output=True, text=True, timeout=60)
    if ids.stdout.split():
        subprocess.run(["docker", "rm", "-f", *ids.stdout.split()], capture_output=True, timeout=120, check=False)


@pytest.mark.docker
def _customer(run_cli, user, token: str) -> tuple[dict[str, str], Path]:
    """A customer with $20, the test template, a small RTX 5090 and an SSH key in the
    CLI's HOME (the default key `launch` adds): the CLI's env and the private key."""
    TemplateFactory()
    GpuType.objects.filter(sku="rtx-5090").update(cpu_limit=1, ram_limit_mb=1024)
    credit(user, "20.00")
    ssh_dir = run_cli.home / ".ssh"
    ssh_dir.mkdir(mode=0o700)
    return {"GPUCLOUD_TOKEN": token}, _keygen(ssh_dir / "id_ed25519")


@pytest.mark.celery
@pytest.mark.usefixtures("_no_containers_left")
def test_launch_wait_ssh_scp_logs_stop_start_rm_on_a_real_instance(
    run_cli, celery_worker, alice, alice_token, this_host, tmp_path
):
    env, key = _customer(run_cli, alice, alice_token)

    launched = run_cli("launch", "-t", "test-sshd", "-g", "rtx-5090", "-s", "20", "--wait", "--json", env=env)
    assert launched.returncode == 0, launched.stderr
    assert "Adding your key" in launched.stderr
    assert "provisioning" in launched.stderr or "pending" in launched.stderr  # the progress line
    instance = json.loads(launched.stdout)
    assert instance["status"] == "running"
    iid = instance["id"]

    # The real ssh with the user's key: no password shown.
    ran = run_cli("ssh", iid, "-i", str(key), "--", "id", "-u", env=env)
    assert ran.returncode == 0, ran.stderr
    assert ran.stdout.strip() == "0"
    assert "password" not in ran.stderr
    status = run_cli("ssh", iid, "-i", str(key), "--", "exit", "7", env=env)
    assert status.returncode == 7  # the remote command's status is the CLI's

    # scp and rsync with the same connection details, both ways.
    local = tmp_path / "data.txt"
    local.write_text("payload-42\n")
    assert run_cli("scp", iid, "-i", str(key), str(local), ":/tmp/up.txt", env=env).returncode == 0
    back = tmp_path / "back.txt"
    copied = run_cli("scp", iid, "-i", str(key), ":/tmp/up.txt", str(back), env=env)
    assert copied.returncode == 0, copied.stderr
    assert back.read_text() == "payload-42\n"
    synced = run_cli("rsync", iid, "-i", str(key), ":/tmp/up.txt", str(tmp_path / "rsynced.txt"), env=env)
    if synced.returncode == 0:  # rsync must also be installed in the image
        assert (tmp_path / "rsynced.txt").read_text() == "payload-42\n"
    else:
        assert "rsync" in synced.stderr

    # No key of the user's works: the password is shown and ssh asks for it (here through
    # SSH_ASKPASS, the way ssh asks a program instead of a terminal).
    stranger = _keygen(tmp_path / "stranger")
    password = json.loads(run_cli("show", iid, "--json", env=env).stdout)["access"]["password"]
    askpass = tmp_path / "askpass.sh"
    askpass.write_text(f"#!/bin/sh\necho '{password}'\n")
    askpass.chmod(0o700)
    fallback = run_cli(
        "ssh", iid, "-i", str(stranger), "--", "echo", "via-password",
        env=env | {"SSH_ASKPASS": str(askpass), "SSH_ASKPASS_REQUIRE": "force", "DISPLAY": ":0"},
    )  # fmt: skip
    assert fallback.returncode == 0, fallback.stderr
    assert fallback.stdout.strip() == "via-password"
    assert f"the root password is: {password}" in fallback.stderr
    shown = run_cli("show", iid, env=env).stdout
    assert password not in shown  # secrets only with --secrets
    assert password in run_cli("show", iid, "--secrets", env=env).stdout

    listed = json.loads(run_cli("ls", "--json", env=env).stdout)
    assert [(i["id"], i["status"]) for i in listed] == [(iid, "running")]
    assert run_cli("logs", iid, "-n", "20", env=env).returncode == 0

    stopped = run_cli("stop", iid, "--wait", "--json", env=env)
    assert json.loads(stopped.stdout)["status"] == "stopped", stopped.stderr
    again = run_cli("stop", iid, env=env)
    assert again.returncode == 5  # 409: already stopped
    assert "error: instances:" in again.stderr
    assert run_cli("ssh", iid, "--", "id", env=env).returncode == EXIT_NOT_FOUND  # no SSH while stopped
    started = run_cli("start", iid, "--wait", "--json", env=env)
    assert json.loads(started.stdout)["status"] == "running", started.stderr
    assert run_cli("ssh", iid, "-i", str(key), "--", "id", env=env).stdout.startswith("uid=0(root)")

    removed = run_cli("rm", iid, "--wait", "--json", env=env)
    assert json.loads(removed.stdout)["status"] == "terminated", removed.stderr
    kinds = [e["kind"] for e in json.loads(run_cli("events", iid, "--json", env=env).stdout)]
    assert kinds[0] == "created"
    assert kinds[-1] == "terminated"
    billing.meter_run()  # beat's job: the segments of the run become usage rows
    usage = json.loads(run_cli("usage", "--json", env=env).stdout)
    assert {u["instance"] for u in usage} == {iid}
    assert Decimal(json.loads(run_cli("balance", "--json", env=env).stdout)["balance_usd"]) < Decimal("20.00")


def test_the_cli_is_its_own_package_and_never_loads_the_server():
    """`pip install ./cli` gives a client of the API only: no Django, no project module."""
    probe = (
        "import sys, gpucloud_cli.main, gpucloud_cli.ssh\n"
        "bad = sorted(m for m in sys.modules if m.split('.')[0] in "
        "{'django', 'rest_framework', 'gpucloud', 'instances', 'billing', 'templates_app'})\n"
        "print(bad)\n"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60, cwd="/")
    assert out.stdout.strip() == "[]"


def test_launch_queue_waits_in_line_and_waitlist_cancels(run_cli, alice, bob, this_host):
    TemplateFactory()
    launch(alice)  # the one RTX 5090 is taken
    _, key = token_create(user=bob, name="cli")
    env = {"GPUCLOUD_TOKEN": key}
    full = run_cli("launch", "-t", "test-sshd", "-g", "rtx-5090", "-s", "20", env=env)
    assert full.returncode == 5
    assert "instances:no-gpu-available" in full.stderr

    queued = run_cli("launch", "-t", "test-sshd", "-g", "rtx-5090", "-s", "20", "--queue", env=env)
    assert queued.returncode == 0, queued.stderr
    entry_id = queued.stdout.strip()
    assert f"{entry_id} is number 1 in line for rtx-5090" in queued.stderr
    listed = json.loads(run_cli("waitlist", "--json", env=env).stdout)
    assert [(e["id"], e["status"], e["position"]) for e in listed] == [(entry_id, "waiting", 1)]
    assert run_cli("waitlist", "--cancel", entry_id, env=env).stdout.split() == [entry_id, "cancelled"]
    again = run_cli("waitlist", "--cancel", entry_id, env=env)
    assert again.returncode == 5
    assert "instances:waitlist-not-waiting" in again.stderr
    assert not Instance.objects.filter(owner=bob).exists()


@pytest.mark.celery
@pytest.mark.usefixtures("_no_containers_left")
def test_snapshot_take_ls_launch_from_it_restore_and_rm_on_a_real_instance(
    run_cli, celery_worker, alice, alice_token, bob, this_host, tmp_path
):
    """`gpucloud snapshot take|ls|restore|rm` and `launch --snapshot` through the session
    worker and its snapshot store (the local directory, the quick start's default)."""
    env, key = _customer(run_cli, alice, alice_token)

    def sh(iid: str, command: str) -> subprocess.CompletedProcess:
        return run_cli("ssh", iid, "-i", str(key), "--", command, env=env)  # ssh hands it to the remote shell

    launched = run_cli("launch", "-t", "test-sshd", "-g", "rtx-5090", "-s", "20", "--wait", "--json", env=env)
    assert launched.returncode == 0, launched.stderr
    iid = json.loads(launched.stdout)["id"]
    assert sh(iid, "echo kept > /workspace/kept.txt").returncode == 0

    refused = run_cli("snapshot", "take", iid, env=env)  # running: refused, nothing taken
    assert refused.returncode == 5, refused.stderr
    assert "instances:snapshot-needs-stop" in refused.stderr
    assert json.loads(run_cli("snapshot", "ls", "--json", env=env).stdout) == []

    assert run_cli("stop", iid, "--wait", env=env).returncode == 0
    taken = run_cli("snapshot", "take", iid, "--name", "before", "--wait", "--json", env=env)
    assert taken.returncode == 0, taken.stderr
    snap = json.loads(taken.stdout)
    assert (snap["status"], snap["name"], snap["instance"]) == ("ready", "before", iid)
    assert snap["size_bytes"] > 0
    listed = run_cli("snapshot", "ls", "--instance", iid, env=env)
    assert snap["id"] in listed.stdout
    assert "ready" in listed.stdout

    # A new instance from it has the snapshot's file.
    second = run_cli(
        "launch", "-t", "test-sshd", "-g", "rtx-pro-6000", "-s", "20", "--snapshot", snap["id"], "--wait", "--json",
        env=env,
    )  # fmt: skip
    assert second.returncode == 0, second.stderr
    sid = json.loads(second.stdout)["id"]
    read = sh(sid, "cat /workspace/kept.txt")
    assert read.stdout == "kept\n", read.stderr

    # Restored into the stopped first instance after a later write: the later file is gone.
    assert run_cli("start", iid, "--wait", env=env).returncode == 0
    assert sh(iid, "echo later > /workspace/later.txt").returncode == 0
    assert run_cli("stop", iid, "--wait", env=env).returncode == 0
    restored = run_cli("snapshot", "restore", iid, snap["id"], "--wait", "--json", env=env)
    assert restored.returncode == 0, restored.stderr
    assert json.loads(restored.stdout)["status"] == "done"
    assert run_cli("start", iid, "--wait", env=env).returncode == 0
    listing = sh(iid, "ls /workspace")
    assert sorted(set(listing.stdout.split()) - {"lost+found"}) == ["kept.txt"], listing.stderr  # ext4's own

    # Another user's token sees no such snapshot; its owner deletes it.
    _, bob_key = token_create(user=bob, name="cli")
    assert run_cli("snapshot", "rm", snap["id"], env={"GPUCLOUD_TOKEN": bob_key}).returncode == EXIT_NOT_FOUND
    assert run_cli("snapshot", "rm", snap["id"], env=env).returncode == 0
    assert json.loads(run_cli("snapshot", "ls", "--json", env=env).stdout) == []
    for instance_id in (iid, sid):
        assert run_cli("rm", instance_id, env=env).returncode == 0
