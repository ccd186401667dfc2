"""Images kept warm (worker side): every enabled template's image present on this host,
so that launches do not wait for a pull; what the host holds recorded for the admin."""

from __future__ import annotations

from django.utils import timezone

from instances.errors import RuntimeFailure
from instances.host.runtime import DockerRuntime, runtime_for
from instances.models import Host
from instances.registry_models import HostImage
from instances.services.events import logger
from instances.services.pull import image_pull
from templates_app.models import Template


def host_images_warm(
    *, host: Host, template_ids: list[int] | None = None, runtime: DockerRuntime | None = None
) -> dict[str, str]:
    """Pull each enabled template's image (or only those of `template_ids`) that `host`
    lacks, and record every one's presence and size (HostImage).

    A refused pull is recorded on its row (`error`) and the others go on; an unreachable
    engine raises InfrastructureError. Returns image → "present" / "pulled" / "failed".
    """
    runtime = runtime_for(host=host, runtime=runtime)
    templates = Template.objects.filter(enabled=True).order_by("sort_order", "pk")
    if template_ids is not None:
        templates = templates.filter(pk__in=template_ids)
    outcome: dict[str, str] = {}
    for template in templates:
        if template.image in outcome:  # two templates of one image
            continue
        error = ""
        try:
            outcome[template.image] = (
                "pulled" if image_pull(host=host, template=template, runtime=runtime) else "present"
            )
        except RuntimeFailure as exc:
            outcome[template.image], error = "failed", exc.message
            logger.warning("host %s: warming %s failed: %s", host.name, template.image, exc.message)
        size = runtime.image_size(template.image)
        HostImage.objects.update_or_create(
            host=host,
            image=template.image,
            defaults={"present": size is not None, "size_bytes": size, "checked_at": timezone.now(), "error": error},
        )
    return outcome
