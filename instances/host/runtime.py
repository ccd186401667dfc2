"""A small interface over one host's Docker engine: the only module that imports `docker`.

Callers never see the SDK's exceptions: an engine that cannot be reached (or times
out) raises InfrastructureError, which tasks retry with backoff; anything the engine
refuses for this container (image missing, port taken, bad device request) raises
RuntimeFailure, which ends the instance `failed` and is never retried.

Containers are found by their deterministic name (`gpucloud-<public id>`) and by
labels; each lives on its own bridge network of the same name, so one tenant's
container cannot reach another's (Docker isolates bridge networks from each other).
"""

from __future__ import annotations

import builtins
import contextlib
import socket
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import docker
import requests
from docker.errors import APIError, DockerException, ImageNotFound, NotFound
from docker.types import DeviceRequest, LogConfig, Mount
from docker.utils import parse_repository_tag

from instances.errors import InfrastructureError, RuntimeFailure
from instances.host.loopfs import writable_layer_bound

LABEL_INSTANCE = "gpucloud.instance"
LABEL_OWNER = "gpucloud.owner"
LABEL_HOST = "gpucloud.host"
WORKSPACE_MOUNT = "/workspace"


@dataclass(frozen=True)
class PortSpec:
    container_port: int
    host_port: int


@dataclass(frozen=True)
class ContainerSpec:
    """Everything needed to make one instance's container; built by the services."""

    name: str
    image: str
    labels: dict[str, str]
    env: dict[str, str] = field(repr=False)  # holds credentials: never printed
    workspace: str
    bind_address: str
    ports: list[PortSpec]
    cap_add: list[str]
    cpu_limit: float
    memory_mb: int
    pids_limit: int
    command: list[str] | None = None
    gpu_uuid: str | None = None  # a real GPU, requested by UUID; None for a simulated one
    workspace_path: str = WORKSPACE_MOUNT
    disk_gb: int = 0  # the writable layer's bound, where the storage driver can set one
    shm_size_mb: int = 64  # Docker's default, too small for PyTorch DataLoader workers


@dataclass(frozen=True)
class ContainerState:
    id: str
    name: str
    status: str  # created, running, exited, dead, ...
    labels: dict[str, str]
    exit_code: int | None = None
    oom_killed: bool = False
    error: str = ""
    started_at: datetime | None = None
    finished_at: datetime | None = None
    ip_address: str = ""
    pid: int = 0  # the main process on the host (0 when not running): its /proc shows the container's sockets

    @property
    def running(self) -> bool:
        return self.status == "running"

    @property
    def exit_reason(self) -> str:
        """Why the container is not running, in words a customer understands."""
        if self.oom_killed:
            return "out of memory (the container exceeded its memory limit)"
        if self.error:
            return self.error
        if self.exit_code is not None:
            return f"the container exited with code {self.exit_code}"
        return f"the container is {self.status}"


def _parse_time(value: str | None) -> datetime | None:
    """Docker's RFC 3339 timestamps carry nanoseconds; Python takes microseconds."""
    if not value or value.startswith("0001-"):
        return None
    date, _, rest = value.rstrip("Z").partition(".")
    micros = (rest[:6] if rest else "0").ljust(6, "0")
    return datetime.fromisoformat(f"{date}.{micros}").replace(tzinfo=UTC)


def _state(attrs: dict[str, Any]) -> ContainerState:
    state = attrs.get("State") or {}
    networks = (attrs.get("NetworkSettings") or {}).get("Networks") or {}
    return ContainerState(
        id=attrs["Id"],
        name=attrs.get("Name", "").lstrip("/"),
        status=state.get("Status", "unknown"),
        labels=(attrs.get("Config") or {}).get("Labels") or {},
        exit_code=state.get("ExitCode") if state.get("Status") in ("exited", "dead") else None,
        oom_killed=bool(state.get("OOMKilled")),
        error=state.get("Error") or "",
        started_at=_parse_time(state.get("StartedAt")),
        finished_at=_parse_time(state.get("FinishedAt")),
        ip_address=next((n.get("IPAddress") for n in networks.values() if n.get("IPAddress")), ""),
        pid=int(state.get("Pid") or 0),
    )


@contextlib.contextmanager
def _mapped_errors(action: str) -> Iterator[None]:
    """Turn the SDK's exceptions into ours: unreachable → retried, refused → failed."""
    try:
        yield
    except ImageNotFound as exc:
        raise RuntimeFailure(f"{action}: the image is not present on this host ({exc.explanation})") from exc
    except APIError as exc:
        if exc.status_code and exc.status_code >= 500 and "connect" in str(exc.explanation or "").lower():
            raise InfrastructureError(f"{action}: the Docker engine failed ({exc.explanation})") from exc
        raise RuntimeFailure(f"{action}: {exc.explanation or exc}") from exc
    except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
        raise InfrastructureError(f"{action}: the Docker engine is unreachable") from exc
    except DockerException as exc:
        raise InfrastructureError(f"{action}: {exc}") from exc


class DockerRuntime:
    """One host's Docker engine, reached at `base_url`."""

    def __init__(self, *, base_url: str, timeout_seconds: int = 60) -> None:
        self.base_url = base_url
        with _mapped_errors("connect"):
            self.client = docker.DockerClient(base_url=base_url, timeout=timeout_seconds)

    # -- reading ---------------------------------------------------------------------
    def inspect(self, name_or_id: str) -> ContainerState | None:
        """The container's state, or None when there is no such container."""
        with _mapped_errors("inspect"):
            try:
                return _state(self.client.api.inspect_container(name_or_id))
            except NotFound:
                return None

    def list(self, *, labels: dict[str, str]) -> list[ContainerState]:
        """Every container (running or not) carrying all of `labels`."""
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with _mapped_errors("list"):
            found = self.client.api.containers(all=True, filters=filters)
            states = []
            for summary in found:
                try:
                    states.append(_state(self.client.api.inspect_container(summary["Id"])))
                except NotFound:  # removed between the list and the inspect
                    continue
            return states

    def logs(self, name_or_id: str, *, lines: int = 100) -> str:
        """The last `lines` lines of the container's output; "" when there is no container."""
        with _mapped_errors("logs"):
            try:
                raw = self.client.api.logs(name_or_id, stdout=True, stderr=True, tail=max(1, lines))
            except NotFound:
                return ""
        return raw.decode("utf-8", errors="replace")

    def image_exists(self, image: str) -> bool:
        with _mapped_errors("inspect image"):
            try:
                self.client.api.inspect_image(image)
            except NotFound:
                return False
        return True

    def image_size(self, image: str) -> int | None:
        """The image's size in bytes on this host, or None when it is not here."""
        with _mapped_errors("inspect image"):
            try:
                return int(self.client.api.inspect_image(image).get("Size") or 0)
            except NotFound:
                return None

    def engine_info(self) -> dict[str, Any]:
        """`docker info` of the engine (its runtimes and RuncCommit feed the host preflight)."""
        with _mapped_errors("info"):
            return self.client.api.info()

    def writable_layer_bound(self) -> tuple[bool, str]:
        """Whether `--storage-opt size=` bounds a container's writable layer on this
        engine, and in words what does (the host preflight reports it)."""
        if not hasattr(self, "_layer_bound"):
            self._layer_bound = writable_layer_bound(self.engine_info())
        return self._layer_bound

    def pull(self, image: str, *, auth: dict[str, str] | None = None) -> Iterator[dict[str, Any]]:
        """Pull `image` from its registry, yielding the engine's progress messages
        (`{"id": layer, "status": ..., "progressDetail": {"current", "total"}}`).

        Raises RuntimeFailure with the registry's reason (refused credentials, unknown
        image, registry unreachable: the engine answers but the pull cannot be made),
        InfrastructureError when the engine itself cannot be reached.
        """
        repository, tag = parse_repository_tag(image)
        try:
            for message in self.client.api.pull(repository, tag=tag, stream=True, decode=True, auth_config=auth):
                if message.get("error"):
                    raise RuntimeFailure(f"pull {image}: {message['error']}")
                yield message
        except APIError as exc:
            raise RuntimeFailure(f"pull {image}: {exc.explanation or exc}") from exc
        except (requests.exceptions.ConnectionError, requests.exceptions.Timeout) as exc:
            raise InfrastructureError(f"pull {image}: the Docker engine is unreachable") from exc
        except DockerException as exc:
            raise InfrastructureError(f"pull {image}: {exc}") from exc

    # -- writing ---------------------------------------------------------------------
    def run(self, spec: ContainerSpec) -> ContainerState:
        """Create and start the container of `spec`, replacing a stale one of that name.

        Raises RuntimeFailure when the engine refuses (the half-made container is
        removed first), InfrastructureError when it cannot be reached.
        """
        stale = self.inspect(spec.name)
        if stale is not None:
            self.remove(stale.id)
        self._ensure_network(spec.name, spec.labels)
        args = self._create_args(spec)
        # Docker refuses a CPU limit above the machine's cores: a type's limit is a cap.
        args["nano_cpus"] = min(args["nano_cpus"], self._cpus() * 1_000_000_000)
        if spec.disk_gb and self.writable_layer_bound()[0]:
            args["storage_opt"] = {"size": f"{spec.disk_gb}G"}
        with _mapped_errors("create"):
            container = self.client.containers.create(spec.image, name=spec.name, **args)
        try:
            with _mapped_errors("start"):
                container.start()
        except (RuntimeFailure, InfrastructureError):
            self.remove(container.id, network=spec.name)
            raise
        state = self.inspect(container.id)
        if state is None:
            raise RuntimeFailure("the container disappeared right after it started")
        return state

    def stop(self, name_or_id: str, *, timeout_seconds: int = 10) -> ContainerState | None:
        """Stop the container (SIGTERM, then SIGKILL after the timeout); None if it is gone."""
        with _mapped_errors("stop"):
            try:
                self.client.api.stop(name_or_id, timeout=timeout_seconds)
            except NotFound:
                return None
        return self.inspect(name_or_id)

    def remove(self, name_or_id: str, *, network: str | None = None) -> None:
        """Remove the container (killing it if it runs) and its network. Idempotent."""
        state = self.inspect(name_or_id)
        with _mapped_errors("remove"):
            if state is not None:
                with contextlib.suppress(NotFound):
                    self.client.api.remove_container(state.id, force=True)
            network = network or (state.name if state is not None else None)
            if network:
                self.remove_network(network)

    def remove_network(self, name: str) -> None:
        with _mapped_errors("remove network"):
            try:
                self.client.api.remove_network(name)
            except NotFound:
                pass
            except APIError as exc:
                if exc.status_code != 404:
                    # Still has an endpoint (a container being removed): the reconciler retries.
                    raise

    def networks(self, *, labels: dict[str, str]) -> builtins.list[str]:
        filters = {"label": [f"{k}={v}" for k, v in labels.items()]}
        with _mapped_errors("list networks"):
            return [n["Name"] for n in self.client.api.networks(filters=filters)]

    def wait_ready(
        self,
        *,
        container_id: str,
        ports: builtins.list[int],
        timeout_seconds: float,
        health_paths: dict[int, str] | None = None,
    ) -> ContainerState:
        """Wait until every port of the container accepts TCP connections, and each port
        of `health_paths` answers an HTTP GET of its path below 500 (a login page counts).

        Probes the container's own address on its network, not the published host
        port: docker-proxy accepts on the host port even when nothing listens inside.
        Raises RuntimeFailure when the container stops or the time runs out, naming the
        ports (and paths) that never answered.
        """
        deadline = time.monotonic() + timeout_seconds
        paths = health_paths or {}
        waiting: builtins.list[int] = builtins.list(ports)
        while True:
            state = self.inspect(container_id)
            if state is None:
                raise RuntimeFailure("the container disappeared while starting")
            if not state.running:
                raise RuntimeFailure(f"the container stopped while starting: {state.exit_reason}")
            waiting = [p for p in waiting if not _ready(state.ip_address, p, paths.get(p))]
            if not waiting:
                return state
            if time.monotonic() > deadline:
                names = ", ".join(f"{p} (GET {paths[p]})" if p in paths else str(p) for p in waiting)
                raise RuntimeFailure(f"port(s) {names} did not answer within {timeout_seconds:.0f} s")
            time.sleep(0.1)

    # -- internals -------------------------------------------------------------------
    def _cpus(self) -> int:
        if not hasattr(self, "_ncpu"):
            with _mapped_errors("info"):
                self._ncpu = int(self.client.api.info().get("NCPU") or 1)
        return self._ncpu

    def _ensure_network(self, name: str, labels: dict[str, str]) -> None:
        with _mapped_errors("create network"):
            if self.client.api.networks(names=[name]):
                return
            try:
                self.client.api.create_network(name, driver="bridge", labels=labels, check_duplicate=True)
            except APIError as exc:
                if exc.status_code == 409:  # made by a concurrent run of the same task
                    return
                if "address pool" not in str(exc.explanation or ""):
                    raise
                # Docker's pools hold about 30 networks: free this host's unused ones, retry once.
                # Only those older than a minute: a concurrent launch's network has no
                # endpoint between its container's create and start, and pruning it then
                # failed that launch with "network ... not found".
                host_label = f"{LABEL_HOST}={labels.get(LABEL_HOST, '')}"
                self.client.api.prune_networks(filters={"label": [host_label], "until": "60s"})
                self.client.api.create_network(name, driver="bridge", labels=labels, check_duplicate=True)

    @staticmethod
    def _create_args(spec: ContainerSpec) -> dict[str, Any]:
        env = dict(spec.env)
        device_requests = None
        if spec.gpu_uuid:
            # By UUID: `count=1` would hand every container the same first device.
            device_requests = [DeviceRequest(device_ids=[spec.gpu_uuid], capabilities=[["gpu"]])]
            env["NVIDIA_VISIBLE_DEVICES"] = spec.gpu_uuid
        return {
            "command": spec.command or None,
            "environment": env,
            "labels": spec.labels,
            "detach": True,
            "ports": {f"{p.container_port}/tcp": (spec.bind_address, p.host_port) for p in spec.ports},
            "network": spec.name,
            "hostname": spec.labels.get(LABEL_INSTANCE, "instance").replace("_", "-"),
            "mounts": [Mount(target=spec.workspace_path, source=spec.workspace, type="bind", read_only=False)],
            "cap_drop": ["ALL"],
            "cap_add": list(spec.cap_add),
            "security_opt": ["no-new-privileges"],
            "privileged": False,
            "pids_limit": spec.pids_limit,
            "mem_limit": f"{spec.memory_mb}m",
            "memswap_limit": f"{spec.memory_mb}m",  # no swap beyond the limit
            "nano_cpus": int(spec.cpu_limit * 1_000_000_000),
            "ipc_mode": "private",
            "shm_size": f"{spec.shm_size_mb}m",
            # Docker's default on cgroup v1 hosts is the host's cgroup namespace, which
            # shows the container the host's cgroup paths (/proc/self/cgroup).
            "cgroupns": "private",
            "device_requests": device_requests,
            "restart_policy": {"Name": "no"},  # the reconciler, not Docker, decides what a death means
            "log_config": LogConfig(type="json-file", config={"max-size": "10m", "max-file": "3"}),
        }


def _ready(address: str, port: int, path: str | None) -> bool:
    if not path:
        return _accepts(address, port)
    try:
        return requests.get(f"http://{address}:{port}{path}", timeout=1, allow_redirects=False).status_code < 500
    except requests.RequestException:
        return False


def _accepts(address: str, port: int) -> bool:
    if not address:
        return False
    try:
        with socket.create_connection((address, port), timeout=0.5):
            return True
    except OSError:
        return False


_runtimes: dict[str, DockerRuntime] = {}


def get_runtime(*, base_url: str) -> DockerRuntime:
    """The runtime of the engine at `base_url`, made once per process."""
    if base_url not in _runtimes:
        _runtimes[base_url] = DockerRuntime(base_url=base_url)
    return _runtimes[base_url]


def runtime_for(*, host: Any, runtime: DockerRuntime | None = None) -> DockerRuntime:
    """`runtime` when a caller (a test) passes one, else the engine of `host`."""
    return runtime or get_runtime(base_url=host.docker_url)
