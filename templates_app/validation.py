"""The one check of a template's fields, for every way a template is written.

The API's serializer (templates_app.api) and the admin's form (templates_app.admin)
both call `template_problems`, so a staff user cannot get past a rule by picking the
other door. What a template says reaches Docker as is (capabilities, environment,
image, mount point), so this is what stands between an insider with the catalog's
permissions and root on a host.

The reserved environment names live here rather than in instances/: templates_app
imports nothing of instances, and instances may import them from here.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from templates_app.catalog import SSHD_CAPS

# Capabilities a template may add back after `cap_drop=ALL`: what sshd needs, plus the
# file-ownership ones some images use at start. Never SYS_ADMIN, NET_ADMIN, SYS_MODULE,
# SYS_PTRACE, ALL and the like: each of those is a way out of the container.
ALLOWED_CAPS = frozenset([*SSHD_CAPS, "FOWNER", "FSETID", "DAC_OVERRIDE"])

# Names the platform sets itself (GPUCLOUD_, NVIDIA_) or that make a process load
# code chosen by whoever wrote the variable (the dynamic loader, interpreters' start-up
# hooks). Compared upper-cased, as the launch compares a customer's names.
RESERVED_ENV_PREFIXES = ("GPUCLOUD_", "NVIDIA_", "LD_", "PYTHON")
RESERVED_ENV_NAMES = frozenset(
    {
        "PERL5LIB",
        "PERL5OPT",
        "PERLLIB",
        "PERL5DB",
        "RUBYOPT",
        "RUBYLIB",
        "NODE_OPTIONS",
        "NODE_PATH",
        "BASH_ENV",
        "ENV",
        "PROMPT_COMMAND",
        "SHELLOPTS",
        "BASHOPTS",
        "GCONV_PATH",
        "JAVA_TOOL_OPTIONS",
        "_JAVA_OPTIONS",
    }
)

# What a catalog writer sets, through the API's serializer and the admin's form alike.
TEMPLATE_FIELDS = (
    "slug",
    "name",
    "category",
    "description",
    "image",
    "ports",
    "env",
    "command",
    "access_methods",
    "cap_add",
    "min_gpu_memory_mb",
    "volume_path",
    "ready_timeout_seconds",
    "health_path",
    "shm_size_mb",
    "enabled",
    "sort_order",
)

ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
ENV_VALUE_MAX = 4096
PROTOCOLS = ("tcp", "http")
_PORT_NAME = re.compile(r"^[-a-zA-Z0-9_]{1,32}$")

# Docker's reference grammar (distribution/reference, regexp.go):
# [registry[:port]/]path[/path...][:tag][@digest], path components lowercase.
_DOMAIN_COMPONENT = r"(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])"
_DOMAIN = rf"{_DOMAIN_COMPONENT}(?:\.{_DOMAIN_COMPONENT})*(?::[0-9]+)?"
_PATH_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*"
_NAME = rf"(?:{_DOMAIN}/)?{_PATH_COMPONENT}(?:/{_PATH_COMPONENT})*"
_TAG = r"[\w][\w.-]{0,127}"
_DIGEST = r"[A-Za-z][A-Za-z0-9]*(?:[-_+.][A-Za-z][A-Za-z0-9]*)*:[0-9a-fA-F]{32,}"
IMAGE_REFERENCE = re.compile(rf"^(?P<name>{_NAME})(?::{_TAG})?(?:@{_DIGEST})?$", re.ASCII)
_NAME_MAX = 255  # Docker's limit on the name part

# A mount point is joined into Docker's "source:target:mode" bind string: a ':' or ','
# would add options, whitespace and control characters have no business in it.
_VOLUME_FORBIDDEN = re.compile(r"[:,\s\x00-\x1f\x7f]")


def env_name_reserved(*, name: str) -> bool:
    """True when `name` is one the platform owns or an interpreter's hook."""
    upper = name.upper()
    return upper.startswith(RESERVED_ENV_PREFIXES) or upper in RESERVED_ENV_NAMES


def caps_problems(*, caps: Any) -> list[str]:
    if not isinstance(caps, list) or not all(isinstance(c, str) for c in caps):
        return ["Must be a list of capability names."]
    refused = sorted({c for c in caps if c not in ALLOWED_CAPS})
    if refused:
        allowed = ", ".join(sorted(ALLOWED_CAPS))
        return [f"Not allowed: {', '.join(refused)}. Allowed: {allowed}."]
    return []


def env_problems(*, env: Any) -> list[str]:
    if not isinstance(env, dict):
        return ["Must be an object of names to text values."]
    problems = []
    for name, value in env.items():
        if not isinstance(name, str) or not ENV_NAME.fullmatch(name):
            problems.append(f"{name!r} is not a variable name.")
        elif env_name_reserved(name=name):
            problems.append(f"{name} is reserved (platform variables, the loader's and interpreters' hooks).")
        elif not isinstance(value, str) or "\x00" in value or len(value) > ENV_VALUE_MAX:
            problems.append(f"The value of {name} must be text of at most {ENV_VALUE_MAX} characters.")
    return problems


def image_problems(*, image: Any) -> list[str]:
    if not isinstance(image, str) or not (match := IMAGE_REFERENCE.match(image)):
        return ["Must be a Docker image reference: [registry[:port]/]name[:tag][@digest], lowercase name."]
    if len(match["name"]) > _NAME_MAX:
        return [f"The image name is longer than {_NAME_MAX} characters."]
    return []


def volume_problems(*, path: Any) -> list[str]:
    if not isinstance(path, str) or not path.startswith("/") or path == "/" or ".." in path.split("/"):
        return ["Must be an absolute path without '..' (and not '/')."]
    if _VOLUME_FORBIDDEN.search(path):
        return ["Must not contain ':', ',', spaces or control characters."]
    return []


def ports_problems(*, ports: Any) -> list[str]:
    if not isinstance(ports, list) or not all(isinstance(p, dict) for p in ports):
        return ["Must be a list of {name, port, protocol} objects."]
    problems = []
    for entry in ports:
        port = entry.get("port")
        if not isinstance(entry.get("name"), str) or not _PORT_NAME.match(entry["name"]):
            problems.append(f"Port name {entry.get('name')!r} must be a short slug.")
        if isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535:
            problems.append(f"Port {port!r} must be a number from 1 to 65535.")
        if entry.get("protocol") not in PROTOCOLS:
            problems.append(f"Protocol {entry.get('protocol')!r} must be one of {', '.join(PROTOCOLS)}.")
    names = [p.get("name") for p in ports]
    if len(set(map(str, names))) != len(names):
        problems.append("Port names must be unique.")
    return problems


def command_problems(*, command: Any) -> list[str]:
    if not isinstance(command, list) or not all(isinstance(c, str) and "\x00" not in c for c in command):
        return ["Must be a list of text arguments."]
    return []


# Field → its check. Only the fields present are checked, so a partial update (PATCH)
# checks what it changes; the rest were checked when they were written.
_CHECKS = {
    "cap_add": lambda v: caps_problems(caps=v),
    "env": lambda v: env_problems(env=v),
    "image": lambda v: image_problems(image=v),
    "volume_path": lambda v: volume_problems(path=v),
    "ports": lambda v: ports_problems(ports=v),
    "command": lambda v: command_problems(command=v),
}


def template_problems(*, values: Mapping[str, Any]) -> dict[str, list[str]]:
    """What is wrong with a template's `values`, by field; empty when nothing is."""
    found = {field: check(values[field]) for field, check in _CHECKS.items() if field in values}
    return {field: problems for field, problems in found.items() if problems}
