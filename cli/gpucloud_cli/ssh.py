"""The real `ssh`, `scp` and `rsync`, pointed at an instance with the details the API gives.

The API's `access.ssh` is the command a customer would type (`ssh root@HOST -p PORT`, or
with a cloudflared ProxyCommand); it is parsed here, never rebuilt from guesses. Host keys
are remembered per container (HostKeyAlias = the instance id and the start of its
container: a start or restart makes a new container with new host keys) in the CLI's own
known_hosts, so a port reused by another instance never trips a "host key changed".
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from gpucloud_cli.client import EXIT_NOT_FOUND, CliError, config_dir


@dataclass
class Target:
    instance_id: str
    key_alias: str
    user: str
    host: str
    port: int | None
    options: list[str] = field(default_factory=list)  # e.g. -o ProxyCommand=...
    password: str | None = None

    def ssh_options(self, *, identity: str | None) -> list[str]:
        known_hosts = config_dir() / "known_hosts"
        known_hosts.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        opts = [
            *self.options,
            "-o", f"HostKeyAlias={self.key_alias}",
            "-o", "StrictHostKeyChecking=accept-new",
            "-o", f"UserKnownHostsFile={known_hosts}",
        ]  # fmt: skip
        if identity:
            opts += ["-i", identity, "-o", "IdentitiesOnly=yes"]
        return opts


def target_of(instance: dict) -> Target:
    """The connection details of an instance as the API shows them; CliError without SSH."""
    access = instance.get("access") or {}
    command = access.get("ssh")
    if not command:
        raise CliError(f"{instance['id']} offers no SSH now (status {instance['status']})", exit_code=EXIT_NOT_FOUND)
    words = shlex.split(command)[1:]  # drop "ssh"
    options: list[str] = []
    port: int | None = None
    destination = ""
    i = 0
    while i < len(words):
        word = words[i]
        if word == "-p":
            port = int(words[i + 1])
            i += 2
        elif word == "-o":
            options += ["-o", words[i + 1]]
            i += 2
        elif word.startswith("-o"):
            options += ["-o", word[2:]]
            i += 1
        else:
            destination = word
            i += 1
    user, _, host = destination.rpartition("@")
    started = "".join(ch for ch in str(instance.get("started_at") or "") if ch.isdigit())
    return Target(
        instance_id=instance["id"],
        key_alias=f"{instance['id']}-{started}" if started else instance["id"],
        user=user or "root",
        host=host,
        port=port,
        options=options,
        password=access.get("password"),
    )


def _ssh_argv(target: Target, *, identity: str | None, extra: list[str]) -> list[str]:
    argv = ["ssh", *target.ssh_options(identity=identity)]
    if target.port:
        argv += ["-p", str(target.port)]
    return [*argv, *extra, f"{target.user}@{target.host}"]


def key_works(target: Target, *, identity: str | None) -> bool:
    """Whether a key of the user's logs in (BatchMode: never asks for a password)."""
    argv = _ssh_argv(
        target,
        identity=identity,
        extra=["-o", "BatchMode=yes", "-o", "PasswordAuthentication=no", "-o", "ConnectTimeout=15"],
    )
    probe = subprocess.run([*argv, "true"], capture_output=True, text=True, timeout=60, check=False)
    return probe.returncode == 0


def ssh_run(target: Target, *, identity: str | None, command: list[str], tty: bool | None = None) -> int:
    """Run the real ssh (a shell, or `command`) and return its exit status.

    A key of the user's is tried first; only when none works is the instance's password
    shown (on stderr) and ssh left to ask for it.
    """
    extra: list[str] = []
    if tty is True:
        extra.append("-t")
    if key_works(target, identity=identity):
        extra += ["-o", "PasswordAuthentication=no"]
    elif target.password:
        print(f"No SSH key of yours is accepted; the root password is: {target.password}", file=sys.stderr)
        extra += ["-o", "PreferredAuthentications=keyboard-interactive,password"]
    else:
        print("No SSH key of yours is accepted and the instance has no password login.", file=sys.stderr)
    argv = _ssh_argv(target, identity=identity, extra=extra)
    # ssh's options end at the destination: what follows is the remote command.
    return subprocess.call([*argv, *command])


def copy_argv(
    tool: str, target: Target, *, identity: str | None, sources: list[str], dest: str, recursive: bool
) -> list[str]:
    """`scp` or `rsync` argv; an argument `:path` names a path on the instance."""

    def remote(path: str) -> str:
        return f"{target.user}@{target.host}:{path[1:]}" if path.startswith(":") else path

    options = target.ssh_options(identity=identity)
    if tool == "scp":
        argv = ["scp", *options]
        if target.port:
            argv += ["-P", str(target.port)]
        if recursive:
            argv.append("-r")
    else:
        if shutil.which("rsync") is None:
            raise CliError("rsync is not installed here")
        ssh = ["ssh", *options] + (["-p", str(target.port)] if target.port else [])
        argv = ["rsync", "-a" if recursive else "-t", "-e", shlex.join(ssh)]
    return [*argv, *(remote(s) for s in sources), remote(dest)]


def default_public_key() -> Path | None:
    """The user's usual public key (~/.ssh/id_ed25519.pub, id_ecdsa.pub, id_rsa.pub)."""
    home = Path(os.environ.get("HOME", str(Path.home())))
    for name in ("id_ed25519.pub", "id_ecdsa.pub", "id_rsa.pub"):
        path = home / ".ssh" / name
        if path.is_file():
            return path
    return None
