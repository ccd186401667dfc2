"""The server's REST API over HTTP, the stored login, and the API's errors as exit codes.

Nothing here imports the server: the CLI knows it only by its routes and its one error
shape, `{"error": {"code": "...", "message": "...", "detail": {...}}}`.
"""

from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"

# Exit codes by HTTP status of the API's answer (stable: scripts may rely on them).
EXIT_ERROR = 1  # anything else (5xx other than 503, an unexpected answer)
EXIT_USAGE = 2  # click's own code for bad command-line usage; also 400 bad input
EXIT_AUTH = 3  # 401 / 403: no token, a wrong or revoked token, not allowed
EXIT_NOT_FOUND = 4  # 404: no such thing of yours
EXIT_CONFLICT = 5  # 409: state conflict, no capacity, a limit reached
EXIT_PAYMENT = 6  # 402: the balance does not cover it
EXIT_THROTTLED = 7  # 429: throttled or backing off (see Retry-After)
EXIT_UNAVAILABLE = 8  # 503 or the server not reachable at all
EXIT_FAILED = 9  # an instance we waited for ended failed
EXIT_TIMEOUT = 10  # --wait ran out before the instance was ready

_BY_STATUS = {
    400: EXIT_USAGE,
    401: EXIT_AUTH,
    403: EXIT_AUTH,
    404: EXIT_NOT_FOUND,
    409: EXIT_CONFLICT,
    402: EXIT_PAYMENT,
    422: EXIT_USAGE,
    429: EXIT_THROTTLED,
    503: EXIT_UNAVAILABLE,
}


class CliError(Exception):
    """An error the CLI reports in one line and exits with `exit_code`."""

    def __init__(self, message: str, *, exit_code: int = EXIT_ERROR, code: str = "", detail: Any = None) -> None:
        super().__init__(message)
        self.message = message
        self.exit_code = exit_code
        self.code = code
        self.detail = detail


def config_dir() -> Path:
    if os.environ.get("GPUCLOUD_CONFIG_DIR"):
        return Path(os.environ["GPUCLOUD_CONFIG_DIR"])
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "gpucloud"


def config_path() -> Path:
    return config_dir() / "config.json"


def config_load() -> dict[str, str]:
    try:
        return json.loads(config_path().read_text())
    except (FileNotFoundError, ValueError):
        return {}


def config_save(*, url: str, token: str) -> Path:
    """Write the login, readable by its owner only (0600 from the moment it exists)."""
    path = config_path()
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump({"url": url, "token": token}, handle)
    os.chmod(tmp, 0o600)  # an existing file keeps its old mode through O_CREAT
    os.replace(tmp, path)
    return path


def config_clear() -> bool:
    try:
        config_path().unlink()
    except FileNotFoundError:
        return False
    return True


def error_from(response: httpx.Response) -> CliError:
    """The API's error answer as a CliError with its stable code and the matching exit code."""
    exit_code = _BY_STATUS.get(response.status_code, EXIT_ERROR)
    try:
        error = response.json()["error"]
        code, message, detail = str(error["code"]), str(error["message"]), error.get("detail")
    except (ValueError, KeyError, TypeError):
        code, message, detail = f"http-{response.status_code}", response.text[:200] or response.reason_phrase, None
    if response.status_code == 429 and response.headers.get("Retry-After"):
        message = f"{message} (retry after {response.headers['Retry-After']} s)"
    return CliError(f"{code}: {message}", exit_code=exit_code, code=code, detail=detail)


@dataclass
class Api:
    """An authenticated client of one server."""

    url: str
    token: str
    timeout: float = 60.0

    @classmethod
    def from_environment(cls, *, url: str | None = None, token: str | None = None) -> Api:
        """The login: flags, then GPUCLOUD_URL / GPUCLOUD_TOKEN, then the stored file."""
        stored = config_load()
        url = url or os.environ.get("GPUCLOUD_URL") or stored.get("url") or DEFAULT_URL
        token = token or os.environ.get("GPUCLOUD_TOKEN") or stored.get("token") or ""
        if not token:
            raise CliError("not logged in: run `gpucloud login` or set GPUCLOUD_TOKEN", exit_code=EXIT_AUTH)
        return cls(url=url.rstrip("/"), token=token)

    def request(self, method: str, path: str, *, retry_key: bool = False, **kwargs: Any) -> httpx.Response:
        headers = {"Authorization": f"Token {self.token}", "Accept": "application/json"}
        headers.update(kwargs.pop("headers", {}))
        # A launch carries an Idempotency-Key, so a retry after a lost answer gets the same
        # instance instead of a second one (and a second bill).
        if retry_key:
            headers["Idempotency-Key"] = str(uuid.uuid4())
        attempts = 3 if retry_key or method == "GET" else 1
        for attempt in range(attempts):
            try:
                response = httpx.request(method, f"{self.url}{path}", headers=headers, timeout=self.timeout, **kwargs)
            except httpx.TransportError as exc:
                if attempt + 1 < attempts:
                    continue
                raise CliError(f"cannot reach {self.url}: {exc}", exit_code=EXIT_UNAVAILABLE) from None
            if response.status_code >= 400:
                raise error_from(response)
            return response
        raise AssertionError("unreachable")

    def get(self, path: str, **params: Any) -> Any:
        return self.request("GET", path, params={k: v for k, v in params.items() if v is not None}).json()

    def post(self, path: str, body: Any = None, **kwargs: Any) -> Any:
        response = self.request("POST", path, json=body, **kwargs)
        return response.json() if response.content else None

    def delete(self, path: str) -> Any:
        response = self.request("DELETE", path)
        return response.json() if response.content else None

    def pages(self, path: str, *, limit: int | None = None, **params: Any) -> list[Any]:
        """Every item of a paginated list (or the first `limit`), following `next`."""
        items: list[Any] = []
        offset = 0
        while True:
            page = self.get(path, limit=200, offset=offset, **params)
            if isinstance(page, list):  # an unpaginated list
                return page[:limit] if limit else page
            items.extend(page["results"])
            offset += len(page["results"])
            if not page.get("next") or not page["results"] or (limit and len(items) >= limit):
                return items[:limit] if limit else items
