"""The API's one pagination: limit/offset with both bounded.

DRF's LimitOffsetPagination takes any `limit` (one request could ask for every row)
and any `offset`: one past PostgreSQL's bigint is a DataError, a 500. Here `limit` is
capped at MAX_LIMIT (as DRF's `max_limit` does: silently) and an `offset` over
MAX_OFFSET is a 400 `invalid-request` naming the bound; an offset past the end within
the bound is an empty page, as before. Every list of the API pages with this class
(REST_FRAMEWORK's DEFAULT_PAGINATION_CLASS).
"""

from __future__ import annotations

from typing import Any

from rest_framework.exceptions import ValidationError
from rest_framework.pagination import LimitOffsetPagination
from rest_framework.request import Request

MAX_LIMIT = 200
# Far past any real list (a year of one-minute ledger rows is ~525,000), far below
# bigint, and it bounds the rows an OFFSET scan may skip.
MAX_OFFSET = 1_000_000


class BoundedPagination(LimitOffsetPagination):
    max_limit = MAX_LIMIT

    def get_offset(self, request: Request) -> int:
        """The page's offset (0 when absent or not a number, as DRF reads it).

        Raises ValidationError (400 `invalid-request`) for an offset over MAX_OFFSET.
        """
        offset = super().get_offset(request)
        if offset > MAX_OFFSET:
            raise ValidationError({self.offset_query_param: [f"Ensure this value is at most {MAX_OFFSET}."]})
        return offset

    def get_schema_operation_parameters(self, view: Any) -> list[dict[str, Any]]:
        """DRF's two parameters, with their bounds in the schema (what a client may send)."""
        parameters = super().get_schema_operation_parameters(view)
        for parameter in parameters:
            if parameter["name"] == self.offset_query_param:
                parameter["schema"] |= {"minimum": 0, "maximum": MAX_OFFSET}
            elif parameter["name"] == self.limit_query_param:
                parameter["description"] += f" At most {MAX_LIMIT}: a larger limit is served as {MAX_LIMIT}."
        return parameters
