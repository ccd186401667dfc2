"""Real processes that suites start, break and start again: a subprocess in its own
session, a Celery worker on one host's queue, a Docker engine of a suite's own.

The fault suite (tests/reliability) and the fleet suite (tests/fleet) use them with
names of their own, so neither ever touches the other's engine, bridge or queue.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.containers import docker
from tests.processes import ROOT, wait_until


class Process:
    """A subprocess in its own session, so a signal reaches it and all its children."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], *, logs: Path) -> None:
        self.name, self.argv, self.env = name, argv, env
        self.log_path = logs / f"{name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("a") as log:
            log.write(f"\n----- start {time.strftime('%H:%M:%S')} -----\n")
            log.flush()
            self.proc = subprocess.Popen(
                self.argv, cwd=ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self, sig: int = signal.SIGKILL) -> None:
        """Send `sig` to the whole process group and wait for the leader to exit."""
        if not self.alive():
            return
        assert self.proc is not None
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, sig)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.kill(signal.SIGTERM)


class Worker(Process):
    """A Celery worker (threads pool) consuming `queue`, with `env` as its environment."""

    def __init__(
        self, name: str, *, queue: str, env: dict[str, str], logs: Path, concurrency: int = 4, prefix: str = "faults"
    ) -> None:
        argv = [sys.executable, "-m", "celery", "-A", "gpucloud", "worker", "-Q", queue]
        argv += ["-c", str(concurrency), "-P", "threads", "--without-gossip", "--without-mingle", "-l", "INFO"]
        argv += ["-n", f"{prefix}-{name}@%h"]
        super().__init__(name, argv, env, logs=logs)

    def start(self) -> None:
        mark = len(self.log())
        super().start()
        wait_until(
            lambda: "ready." in self.log()[mark:] or not self.alive(), timeout=60, what=f"worker {self.name} ready"
        )
        if not self.alive():
            raise RuntimeError(f"worker {self.name} exited:\n{self.log()[-3000:]}")


@dataclass(frozen=True)
class EngineLayout:
    """Everything a private Docker engine owns, named so that two suites' engines (and
    the machine's shared one) never meet: its socket, data and exec roots, pidfile,
    config file, default bridge and address pool."""

    name: str
    socket: Path
    bridge: tuple[str, str]
    address_pool: str

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    @property
    def config(self) -> Path:
        return Path(f"/var/run/gpucloud-{self.name}-docker.json")


class Dockerd(Process):
    """A Docker engine of our own. Its default bridge is one we make (`--bridge`): a
    second engine left to its defaults reconfigures the shared docker0, and one started
    with `--bridge none`, or with address pools and no live restore, deletes it,
    breaking every container of the shared engine on the default network.
    `--iptables=false` keeps it off the shared engine's rules (published ports go
    through docker-proxy, which is all the tests use); its address pool is one the
    shared engine does not use."""

    def __init__(self, *, layout: EngineLayout, live_restore: bool, logs: Path) -> None:
        self.layout, self.live_restore, self.logs = layout, live_restore, logs
        argv = [
            "dockerd",
            "-H",
            layout.url,
            "--data-root",
            f"/var/lib/gpucloud-{layout.name}-docker",
            "--exec-root",
            f"/var/run/gpucloud-{layout.name}-docker",
            "--pidfile",
            f"/var/run/gpucloud-{layout.name}-docker.pid",
            "--bridge",
            layout.bridge[0],
            "--iptables=false",
            f"--live-restore={'true' if live_restore else 'false'}",
            # Never the shared engine's /etc/docker/daemon.json (its address pools would
            # clash with the flag below, or bring back the docker0 deletion above).
            "--config-file",
            str(layout.config),
        ]
        if live_restore:
            # dockerd 20.10 deletes the host's docker0 when it starts with address pools
            # and without live restore: the pool only goes with live restore, and a run
            # without it makes no network (the fixture starts it again with both).
            argv += ["--default-address-pool", f"base={layout.address_pool},size=24"]
        super().__init__("dockerd", argv, dict(os.environ), logs=logs)

    def cli(self, *args: str, check: bool = True) -> str:
        return docker("-H", self.layout.url, *args, check=check)

    def answers(self) -> bool:
        done = subprocess.run(["docker", "-H", self.layout.url, "info"], capture_output=True, check=False, timeout=20)
        return done.returncode == 0

    def start(self) -> None:
        self.layout.socket.parent.mkdir(parents=True, exist_ok=True)
        self.layout.config.write_text("{}\n")
        name, address = self.layout.bridge
        if subprocess.run(["ip", "link", "show", name], capture_output=True, check=False).returncode:
            subprocess.run(["ip", "link", "add", name, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", address, "dev", name], check=True)
            subprocess.run(["ip", "link", "set", name, "up"], check=True)
        super().start()
        wait_until(self.answers, timeout=60, what=f"the {self.layout.name} dockerd to answer", every=0.5)

    def restart(self, *, live_restore: bool, while_down: Callable[[], None] | None = None) -> None:
        """SIGTERM the engine as an operator's restart does, wait for it to exit, run
        `while_down`, and start it again (with or without live restore)."""
        self.stop()
        if while_down is not None:
            while_down()
        self.__init__(layout=self.layout, live_restore=live_restore, logs=self.logs)  # type: ignore[misc]
        self.start()

    def load_image(self, image: str) -> None:
        """Copy `image` from the shared engine unless this one has it already."""
        if self.cli("images", "-q", image).strip():
            return
        save = subprocess.Popen(["docker", "save", image], stdout=subprocess.PIPE)
        subprocess.run(["docker", "-H", self.layout.url, "load"], stdin=save.stdout, check=True, timeout=300)
        save.wait(timeout=60)

    def empty(self) -> None:
        """Remove every container and unused network of this engine."""
        with contextlib.suppress(Exception):
            ids = self.cli("ps", "-aq").split()
            if ids:
                self.cli("rm", "-f", *ids, check=False)
            self.cli("network", "prune", "-f", check=False)
