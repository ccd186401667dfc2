"""Errors of the catalog: subclasses of gpucloud.errors.DomainError."""

from __future__ import annotations

from http import HTTPStatus

from gpucloud.errors import DomainError


class TemplateError(DomainError):
    code = "templates:error"


class TemplateInUse(TemplateError):
    """A template that instances refer to cannot be deleted (disable it instead)."""

    code = "templates:in-use"
    status = HTTPStatus.CONFLICT
    default_message = "Instances use this template: disable it (PATCH enabled=false) instead of deleting it."
