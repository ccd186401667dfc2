"""Errors of the instances app: each has a stable `code` and an HTTP `status`.

All subclass gpucloud.errors.DomainError: the API's exception handler renders them,
web views show their `message`.
"""

from __future__ import annotations

from http import HTTPStatus

from gpucloud.errors import DomainError


class InstanceError(DomainError):
    code = "instances:error"


class UnknownTemplate(InstanceError):
    code = "instances:unknown-template"
    default_message = "No such template in the catalog."


class UnknownGpuType(InstanceError):
    code = "instances:unknown-gpu-type"
    default_message = "No such GPU type."


class InvalidStorage(InstanceError):
    code = "instances:invalid-storage"
    default_message = "Storage is out of bounds."


class InvalidAccess(InstanceError):
    code = "instances:invalid-access"
    default_message = "The template does not offer that access method."


class InvalidSSHKey(InstanceError):
    code = "instances:invalid-ssh-key"
    default_message = "That is not a valid SSH public key."


class TokenNeedsSession(InstanceError):
    """An API token asked to make another: only a signed-in session (or the operator's
    `create_api_token`) may, so a leaked key cannot mint a sibling that outlives it."""

    code = "instances:token-needs-session"
    status = HTTPStatus.FORBIDDEN
    default_message = "API tokens are made from a signed-in web session, not with an API token."


class InvalidTokenExpiry(InstanceError):
    code = "instances:invalid-token-expiry"
    default_message = "A token's expiry must lie in the future."


class InvalidEnv(InstanceError):
    code = "instances:invalid-env"
    default_message = "Environment variables must be NAME=value strings with a valid name."


class GpuTooSmall(InstanceError):
    """The template needs more GPU memory than a GPU of the chosen type has."""

    code = "instances:gpu-too-small"
    default_message = "That GPU type has too little memory for this template."


class NoCapacity(InstanceError):
    code = "instances:no-gpu-available"
    status = HTTPStatus.CONFLICT
    default_message = "No GPU of that type is free right now."


class NoHealthyGpu(InstanceError):
    """Every free GPU of the type on the instance's host failed its health check before
    the container was made (instances.services.health): the sick ones are quarantined."""

    code = "instances:no-healthy-gpu"
    status = HTTPStatus.CONFLICT
    default_message = "No healthy GPU of this type is free on this host right now."


class GpuNotQuarantined(InstanceError):
    code = "instances:gpu-not-quarantined"
    status = HTTPStatus.CONFLICT
    default_message = "This GPU is not quarantined."


class InvalidTransition(InstanceError):
    code = "instances:invalid-state"
    status = HTTPStatus.CONFLICT
    default_message = "The instance is not in a state that allows this."


class StartBackoff(InstanceError):
    """The instance's last start(s) ran a container that never became ready: a new
    start waits a delay that doubles with each such failure (instances.services.backoff)."""

    code = "instances:start-backoff"
    status = HTTPStatus.TOO_MANY_REQUESTS
    default_message = "The last start of this instance failed; try again shortly."


class NotFound(InstanceError):
    code = "instances:not-found"
    status = HTTPStatus.NOT_FOUND
    default_message = "No such instance."


class HostUnavailable(InstanceError):
    code = "instances:host-unavailable"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "The instance's host is not taking work right now."


class RuntimeFailure(InstanceError):
    """A container could not be made or run (image missing, exited, port never opened)."""

    code = "instances:runtime-failure"
    status = HTTPStatus.BAD_GATEWAY
    default_message = "The container could not be started."


class InfrastructureError(InstanceError):
    """The Docker engine is unreachable or errored transiently: retried with backoff."""

    code = "instances:infrastructure"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "The host's container engine is unavailable."


class QueueUnavailable(InstanceError):
    """A launch's task could not be handed to the broker (Redis down): the instance was
    marked failed at once, its GPU and ports released, so nothing is half-made."""

    code = "instances:queue-unavailable"
    status = HTTPStatus.SERVICE_UNAVAILABLE
    default_message = "The task queue is unreachable, so nothing was launched. Try again shortly."


class IdempotencyKeyReused(InstanceError):
    code = "instances:idempotency-key-reused"
    status = HTTPStatus.UNPROCESSABLE_ENTITY
    default_message = "This Idempotency-Key was used for a launch with another body. Use a new key for a new launch."


class InvalidIdempotencyKey(InstanceError):
    code = "instances:invalid-idempotency-key"
    default_message = "An Idempotency-Key is 1 to 255 printable ASCII characters."


class AdmissionRefused(InstanceError):
    """Raised by an admission check (GPUCLOUD_ADMISSION_CHECKS); the check sets code/status."""

    code = "instances:admission-refused"
    status = HTTPStatus.PAYMENT_REQUIRED


class LockBusy(InfrastructureError):
    """Another process holds a named lock (instances.services.locks): retried later."""

    code = "instances:busy"
    default_message = "Another operation is in progress; try again shortly."


class InstanceBusy(LockBusy):
    """Another task holds this instance's lock: the caller retries later."""

    code = "instances:busy"
    default_message = "Another operation on this instance is in progress."


class ExposureFailed(InstanceError):
    """The Cloudflare API refused or was unreachable (instances.access.exposure)."""

    code = "instances:exposure-failed"
    status = HTTPStatus.BAD_GATEWAY
    default_message = "The instance's public hostnames could not be updated."


class LaunchThrottled(InstanceError):
    """Too many launches by one user within the `instance-create` rate (the web's launch
    counts in the same per-user bucket as the API's)."""

    code = "throttled"
    status = HTTPStatus.TOO_MANY_REQUESTS
    default_message = "Too many launches in a short time. Try again shortly."


class InvalidIdleSettings(InstanceError):
    code = "instances:invalid-idle-settings"
    default_message = "Those idle or runtime settings are not allowed."


class WaitlistEntryNotFound(InstanceError):
    code = "instances:waitlist-entry-not-found"
    status = HTTPStatus.NOT_FOUND
    default_message = "No such waitlist entry."


class WaitlistNotWaiting(InstanceError):
    code = "instances:waitlist-not-waiting"
    status = HTTPStatus.CONFLICT
    default_message = "This waitlist entry is no longer waiting."


class StorageShrink(InstanceError):
    """A workspace is only ever grown: shrinking a filesystem risks the customer's files."""

    code = "instances:storage-shrink"
    default_message = "Storage can only be grown."


class SnapshotNotFound(InstanceError):
    code = "instances:snapshot-not-found"
    status = HTTPStatus.NOT_FOUND
    default_message = "No such snapshot."


class SnapshotNeedsStop(InstanceError):
    """A snapshot is taken of a stopped workspace only: files written while it is read
    would make an archive of no single moment. Stop first, or destroy keeping a snapshot."""

    code = "instances:snapshot-needs-stop"
    status = HTTPStatus.CONFLICT
    default_message = "Stop the instance before taking a snapshot of its workspace."


class SnapshotNotReady(InstanceError):
    code = "instances:snapshot-not-ready"
    status = HTTPStatus.CONFLICT
    default_message = "This snapshot is not ready to restore."


class SnapshotTooLarge(InstanceError):
    code = "instances:snapshot-too-large"
    default_message = "The snapshot holds more than the requested storage."


class SnapshotBusy(InstanceError):
    """A snapshot or restore of this instance's workspace is in progress."""

    code = "instances:snapshot-busy"
    status = HTTPStatus.CONFLICT
    default_message = "A snapshot or restore of this workspace is in progress; try again when it is done."


class SnapshotCorrupt(InstanceError):
    """The stored object's SHA-256 is not the one recorded when it was taken."""

    code = "instances:snapshot-checksum-mismatch"
    status = HTTPStatus.CONFLICT
    default_message = "The snapshot's checksum does not match: it was not restored."


class RestoreFailed(InstanceError):
    code = "instances:restore-failed"
    status = HTTPStatus.BAD_GATEWAY
    default_message = "The snapshot could not be restored."


class MoveRequired(InstanceError):
    """The instance's own host cannot take it (no free GPU of its type, draining,
    unreachable) but another can: starting it there moves its workspace. The customer
    confirms with `?move=1` (instances.services.move)."""

    code = "instances:move-required"
    status = HTTPStatus.CONFLICT
    default_message = "Starting this instance moves its workspace to another host; confirm with move=1."


class MoveImpossible(InstanceError):
    """A move cannot begin: the old host is unreachable and no snapshot taken since the
    last stop holds the workspace, or a move of it is already under way."""

    code = "instances:move-impossible"
    status = HTTPStatus.CONFLICT
    default_message = "The workspace cannot be moved now."
