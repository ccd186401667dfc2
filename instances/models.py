from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q

from templates_app.models import Template


class Host(models.Model):
    """A GPU workstation. Its Celery worker consumes the queue `host.<name>`."""

    class Status(models.TextChoices):
        ONLINE = "online", "Online"
        DRAINING = "draining", "Draining"
        OFFLINE = "offline", "Offline"
        # Set by the liveness job (instances.services.liveness) when its beats stop.
        UNREACHABLE = "unreachable", "Unreachable"

    name = models.SlugField(max_length=64, unique=True)
    docker_url = models.CharField(max_length=255, default="unix:///var/run/docker.sock")
    public_address = models.CharField(max_length=255, help_text="Address customers use to reach instances.")
    bind_address = models.GenericIPAddressField(default="127.0.0.1", help_text="Address ports are published on.")
    port_range_start = models.PositiveIntegerField(default=20000)
    port_range_end = models.PositiveIntegerField(default=29999)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.ONLINE)
    last_heartbeat_at = models.DateTimeField(null=True, blank=True)
    # Why the host is not online (drained by whom, the last beat before it went silent).
    status_reason = models.CharField(max_length=255, blank=True)
    # What the scheduler may reserve here: the sum of its instances' GPU types' CPU and
    # RAM limits never exceeds these (empty: not accounted; the heartbeat shows the machine's).
    cpu_capacity = models.DecimalField(max_digits=7, decimal_places=2, null=True, blank=True)
    ram_capacity_mb = models.PositiveIntegerField(null=True, blank=True)
    # Preflight (driver, toolkit, runc versions) as the worker last saw it.
    facts = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    # Where customers are sent (SSH commands, Jupyter links) and which engine runs their
    # containers: changed only with the permission below (instances.admin.HostAdmin).
    NETWORK_FIELDS = ("public_address", "bind_address", "docker_url")

    class Meta:
        ordering = ("name",)
        permissions = [
            ("change_host_network", "Can change a host's public address, bind address and Docker engine URL"),
        ]
        constraints = [
            models.CheckConstraint(
                condition=Q(status__in=["online", "draining", "offline", "unreachable"]), name="host_status_valid"
            ),
            models.CheckConstraint(
                condition=Q(
                    port_range_start__gte=1024,
                    port_range_start__lte=models.F("port_range_end"),
                    port_range_end__lte=65535,
                ),
                name="host_port_range_valid",
            ),
        ]

    def __str__(self) -> str:
        return self.name

    @property
    def queue(self) -> str:
        return f"host.{self.name}"


class GpuType(models.Model):
    """A SKU customers choose, with its price and per-instance CPU/RAM limits."""

    sku = models.SlugField(max_length=64, unique=True)
    display_name = models.CharField(max_length=100)
    rate_per_hour = models.DecimalField(max_digits=10, decimal_places=4)
    memory_mb = models.PositiveIntegerField(default=0, help_text="GPU memory.")
    cpu_limit = models.DecimalField(max_digits=6, decimal_places=2, default=8, help_text="CPU cores per instance.")
    ram_limit_mb = models.PositiveIntegerField(default=32768, help_text="RAM per instance.")
    enabled = models.BooleanField(default=True)

    class Meta:
        ordering = ("rate_per_hour",)
        constraints = [models.CheckConstraint(condition=Q(rate_per_hour__gte=0), name="gputype_rate_non_negative")]

    def __str__(self) -> str:
        return self.display_name

    @property
    def with_article(self) -> str:
        """The name after "a" or "an" as it is said: "an RTX 5090", "an H100", "a GeForce"."""
        return f"{indefinite_article(self.display_name)} {self.display_name}"


def indefinite_article(name: str) -> str:
    """ "a" or "an" before a product name. A leading acronym or model number (RTX, H100,
    A6000) is spelled out, so its first letter's spoken name decides; a word by its vowel."""
    first = (name.split() or [""])[0]
    if not first:
        return "a"
    spelled = first.isupper() or any(c.isdigit() for c in first)
    if spelled:
        return "an" if first[0].upper() in "AEFHILMNORSX8" else "a"
    return "an" if first[0].lower() in "aeiou" else "a"


class Gpu(models.Model):
    """One device on a host, real (NVML) or simulated (declared in settings)."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="gpus")
    index = models.PositiveSmallIntegerField()
    uuid = models.CharField(max_length=64, unique=True)
    name = models.CharField(max_length=128, help_text="Model name as the driver reports it.")
    gpu_type = models.ForeignKey(GpuType, on_delete=models.PROTECT, related_name="gpus", null=True, blank=True)
    memory_mb = models.PositiveIntegerField(default=0)
    simulated = models.BooleanField(default=False)
    enabled = models.BooleanField(default=True)
    utilization_percent = models.PositiveSmallIntegerField(null=True, blank=True)
    memory_used_mb = models.PositiveIntegerField(null=True, blank=True)
    temperature_c = models.PositiveSmallIntegerField(null=True, blank=True)
    power_w = models.DecimalField(max_digits=7, decimal_places=1, null=True, blank=True)
    metrics_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ("host__name", "index")
        constraints = [models.UniqueConstraint(fields=["host", "index"], name="gpu_unique_index_per_host")]

    def __str__(self) -> str:
        return f"{self.host.name}/gpu{self.index} ({self.name}{', simulated' if self.simulated else ''})"


def new_public_id() -> str:
    return "inst_" + secrets.token_hex(6)


class Instance(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending", "Pending"
        PROVISIONING = "provisioning", "Provisioning"
        RUNNING = "running", "Running"
        STOPPING = "stopping", "Stopping"
        STOPPED = "stopped", "Stopped"
        STARTING = "starting", "Starting"
        TERMINATING = "terminating", "Terminating"
        TERMINATED = "terminated", "Terminated"
        FAILED = "failed", "Failed"

    # Statuses that hold a GPU. The database refuses two of these on one GPU.
    GPU_HOLDING = ("pending", "provisioning", "running", "stopping", "starting")
    # Statuses in which a container may exist and a workspace is kept.
    LIVE = (*GPU_HOLDING, "stopped", "terminating")

    public_id = models.CharField(max_length=32, unique=True, default=new_public_id, editable=False)
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="instances")
    name = models.CharField(max_length=64, blank=True)
    template = models.ForeignKey(Template, on_delete=models.PROTECT, related_name="instances")
    gpu_type = models.ForeignKey(GpuType, on_delete=models.PROTECT, related_name="instances")
    gpu = models.ForeignKey(Gpu, on_delete=models.PROTECT, related_name="instances", null=True, blank=True)
    # The host keeps the workspace, so it stays set while stopped.
    host = models.ForeignKey(Host, on_delete=models.PROTECT, related_name="instances", null=True, blank=True)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.PENDING, db_index=True)
    container_id = models.CharField(max_length=80, blank=True)
    storage_gb = models.PositiveIntegerField(default=50)
    access = models.JSONField(default=list, blank=True, help_text="Requested access methods.")
    ssh_public_keys = models.JSONField(default=list, blank=True)
    ssh_password_auth = models.BooleanField(default=True)
    env = models.JSONField(default=dict, blank=True)
    # Fernet tokens (instances.access.crypto); never the plain secrets.
    password_encrypted = models.TextField(blank=True)
    access_token_encrypted = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    updated_at = models.DateTimeField(auto_now=True)
    # Start of the current running (billed) segment: when its container started, not
    # when its ports first answered; stopped_at is when the last one ended.
    started_at = models.DateTimeField(null=True, blank=True)
    stopped_at = models.DateTimeField(null=True, blank=True)
    # Starts in a row whose container ran but never became ready, and the time before
    # which a new start is refused (instances.services.backoff); reset by a good start.
    failed_starts = models.PositiveIntegerField(default=0)
    start_not_before = models.DateTimeField(null=True, blank=True)
    terminated_at = models.DateTimeField(null=True, blank=True)
    workspace_removed_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    # Set by billing when the balance is exhausted; cleared on a successful start.
    stop_reason = models.CharField(max_length=64, blank=True)
    # While the worker pulls the template's image: "pulling 2.1 of 7.9 GB" (blank otherwise).
    progress = models.CharField(max_length=120, blank=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(
                fields=["gpu"],
                condition=Q(gpu__isnull=False)
                & Q(status__in=["pending", "provisioning", "running", "stopping", "starting"]),
                name="one_active_instance_per_gpu",
            ),
            models.CheckConstraint(
                condition=Q(
                    status__in=[
                        "pending",
                        "provisioning",
                        "running",
                        "stopping",
                        "stopped",
                        "starting",
                        "terminating",
                        "terminated",
                        "failed",
                    ]
                ),
                name="instance_status_valid",
            ),
            models.CheckConstraint(condition=Q(storage_gb__gte=1), name="instance_storage_positive"),
        ]
        indexes = [models.Index(fields=["owner", "-created_at"], name="instance_owner_created")]

    def __str__(self) -> str:
        return self.public_id

    @property
    def container_name(self) -> str:
        return f"gpucloud-{self.public_id}"

    @property
    def status_shown(self) -> str:
        """The status its owner sees: `unreachable` while its host is (the row keeps its own)."""
        down = self.host is not None and self.host.status == Host.Status.UNREACHABLE
        return "unreachable" if down and self.status in self.LIVE else self.status

    @property
    def error_shown(self) -> str | None:
        """Why it is unreachable (its host's silence), or its last error."""
        if self.host is not None and self.status_shown == "unreachable":
            return self.host.status_reason or None
        return self.last_error or None


class PortBinding(models.Model):
    """A host port published for one instance. The database refuses a port bound twice."""

    host = models.ForeignKey(Host, on_delete=models.CASCADE, related_name="port_bindings")
    host_port = models.PositiveIntegerField()
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="ports")
    name = models.CharField(max_length=32)
    container_port = models.PositiveIntegerField()
    protocol = models.CharField(max_length=8, default="tcp")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("host_port",)
        constraints = [
            models.UniqueConstraint(fields=["host", "host_port"], name="one_binding_per_host_port"),
            models.UniqueConstraint(fields=["instance", "name"], name="one_binding_per_instance_service"),
            models.CheckConstraint(condition=Q(host_port__gte=1, host_port__lte=65535), name="portbinding_port_valid"),
            models.CheckConstraint(condition=Q(protocol__in=["tcp", "http"]), name="portbinding_protocol_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.host.name}:{self.host_port} → {self.instance.public_id}/{self.name}"


class InstanceEvent(models.Model):
    """Append-only timeline of an instance: who or what did what, when, and why.

    Billing reads the `started` and `ended` events: a running segment begins at a
    `started` event's `at` and ends at the next `ended` event's `at` (the container's
    real finish time when the reconciler found it dead).
    """

    class Kind(models.TextChoices):
        CREATED = "created", "Created"
        SCHEDULED = "scheduled", "Scheduled"
        PROVISIONING = "provisioning", "Provisioning"
        PULLING = "pulling", "Pulling image"
        STARTED = "started", "Running"
        STOP_REQUESTED = "stop-requested", "Stop requested"
        START_REQUESTED = "start-requested", "Start requested"
        RESTART_REQUESTED = "restart-requested", "Restart requested"
        DESTROY_REQUESTED = "destroy-requested", "Destroy requested"
        ENDED = "ended", "Segment ended"
        STOPPED = "stopped", "Stopped"
        FAILED = "failed", "Failed"
        TERMINATED = "terminated", "Terminated"
        WORKSPACE_REMOVED = "workspace-removed", "Workspace removed"
        STORAGE_LOW = "storage-low", "Storage almost full"
        RESIZED = "resized", "Storage resized"
        RECONCILED = "reconciled", "Reconciled"
        GPU_FAULT = "gpu-fault", "GPU fault"
        NOTE = "note", "Note"
        IDLE_WARNING = "idle-warning", "Idle stop warning"
        RUNTIME_WARNING = "runtime-warning", "Maximum runtime warning"
        KEEP_ALIVE = "keep-alive", "Kept alive"
        # The host stopped beating (billing paused from its last beat) and came back.
        HOST_UNREACHABLE = "host-unreachable", "Host unreachable"
        HOST_RETURNED = "host-returned", "Host back"
        SNAPSHOT_REQUESTED = "snapshot-requested", "Snapshot requested"
        SNAPSHOT_READY = "snapshot-ready", "Snapshot stored"
        SNAPSHOT_FAILED = "snapshot-failed", "Snapshot failed"
        SNAPSHOT_DELETED = "snapshot-deleted", "Snapshot deleted"
        RESTORE_REQUESTED = "restore-requested", "Restore requested"
        RESTORED = "restored", "Restored from a snapshot"
        RESTORE_FAILED = "restore-failed", "Restore failed"
        # A stopped instance's workspace moving to another host (instances.services.move).
        MOVE_REQUESTED = "move-requested", "Move to another host requested"
        MOVED = "moved", "Moved to another host"
        MOVE_FAILED = "move-failed", "Move failed"

    class Source(models.TextChoices):
        USER = "user", "Customer"
        OPERATOR = "operator", "Operator"
        WORKER = "worker", "Worker"
        RECONCILER = "reconciler", "Reconciler"
        BILLING = "billing", "Billing"

    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, related_name="events")
    at = models.DateTimeField(db_index=True)
    kind = models.CharField(max_length=32, choices=Kind.choices)
    source = models.CharField(max_length=16, choices=Source.choices)
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )
    message = models.TextField(blank=True)
    data = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ("at", "id")
        indexes = [models.Index(fields=["kind", "at"], name="event_kind_at")]

    def __str__(self) -> str:
        return f"{self.instance.public_id} {self.kind} @ {self.at:%Y-%m-%d %H:%M:%S}"


class SSHKey(models.Model):
    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="ssh_keys")
    name = models.CharField(max_length=64)
    public_key = models.TextField()
    key_type = models.CharField(max_length=32)
    bits = models.PositiveIntegerField(null=True, blank=True)
    fingerprint = models.CharField(max_length=64)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ("-created_at",)
        constraints = [
            models.UniqueConstraint(fields=["owner", "fingerprint"], name="sshkey_unique_per_owner"),
            models.UniqueConstraint(fields=["owner", "name"], name="sshkey_name_unique_per_owner"),
        ]

    def __str__(self) -> str:
        return f"{self.name} ({self.fingerprint})"


class ApiToken(models.Model):
    """An API token; only its SHA-256 is stored. The plain key is shown once."""

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=64)
    prefix = models.CharField(max_length=12, help_text="First characters, to recognise a token.")
    key_hash = models.CharField(max_length=64, unique=True)
    created_at = models.DateTimeField(auto_now_add=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Empty: never expires.")

    class Meta:
        ordering = ("-created_at",)

    def __str__(self) -> str:
        return f"{self.name} ({self.prefix}…)"


class Lock(models.Model):
    """A named lock held in the database (instances.services.locks), for settings
    without Redis: web, worker and beat of the quick start share it. Claimed by INSERT
    or by a conditional UPDATE of an expired row, released by DELETE of its token."""

    name = models.CharField(max_length=200, unique=True)
    token = models.CharField(max_length=64)
    expires_at = models.DateTimeField()

    def __str__(self) -> str:
        return self.name


class LaunchKey(models.Model):
    """An `Idempotency-Key` a customer sent with a launch, and the instance it made.

    A retry with the same key (a timeout, a 5xx, a lost answer) gets that instance back
    instead of a second one; the unique (owner, key) constraint is what decides between
    two retries that arrive together. Keys expire after GPUCLOUD_IDEMPOTENCY_KEY_TTL_SECONDS.
    """

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    key = models.CharField(max_length=255)
    # SHA-256 of the launch's validated body: the same key with another body is refused.
    fingerprint = models.CharField(max_length=64)
    # Null only inside the launch's transaction: the key is claimed before the GPU.
    instance = models.ForeignKey(Instance, on_delete=models.CASCADE, null=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["owner", "key"], name="launch_key_owner_key_unique")]
        indexes = [models.Index(fields=["created_at"], name="launch_key_created")]

    def __str__(self) -> str:
        return f"{self.owner_id}:{self.key}"


# Models of their own modules, registered with the app here (one line each).
from instances.health_models import GpuHealthEvent, GpuHealthState  # noqa: E402, F401
from instances.idle_models import IdleRule, InstanceWatch, RuntimeRule  # noqa: E402, F401
from instances.move_models import InstanceMove  # noqa: E402, F401
from instances.notify.models import NotificationPreference, WebhookDelivery, WebhookEndpoint  # noqa: E402, F401
from instances.power_models import GpuPowerSample  # noqa: E402, F401
from instances.registry_models import HostImage, RegistryCredential  # noqa: E402, F401
from instances.snapshot_models import Snapshot, SnapshotRestore  # noqa: E402, F401
from instances.storage_models import WorkspaceUsage  # noqa: E402, F401
from instances.waitlist_models import WaitlistEntry  # noqa: E402, F401
