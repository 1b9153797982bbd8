"""Who may talk to the explorer, and which files it may touch.

- **Token**: when the server listens beyond this machine (``--host``), every request must
  carry a random token, as the ``X-Explore-Token`` header or the ``token`` query parameter.
- **Host check**: on the loopback address only ``Host: 127.0.0.1 | localhost | [::1]`` is
  answered, which defeats DNS-rebinding pages that would otherwise reach the local server.
- **Writes from the page**: POST, PUT and DELETE must carry ``X-Requested-By``; a foreign web
  page cannot add that header without a CORS preflight, which this server never grants.
- **Paths**: a path given through the API is resolved (``..``, symlinks) and must stay in the
  project directory.
"""

from __future__ import annotations

import secrets
from pathlib import Path

from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Receive, Scope, Send

TOKEN_HEADER = "x-explore-token"
TOKEN_QUERY = "token"
WRITE_HEADER = "x-requested-by"
LOOPBACK_HOSTS = frozenset({"127.0.0.1", "localhost", "::1"})
_UNSAFE = frozenset({"POST", "PUT", "DELETE", "PATCH"})
MAX_BODY_BYTES = 16 * 2**20


class OutsideProject(PermissionError):
    """A path that leaves the project directory."""


def new_token() -> str:
    """A random URL-safe access token (192 bits)."""
    return secrets.token_urlsafe(24)


def is_loopback(host: str) -> bool:
    return host.strip("[]") in LOOPBACK_HOSTS


def inside(root: Path, relative: str) -> Path:
    """``root / relative`` resolved; raises :class:`OutsideProject` if it leaves ``root``."""
    if not isinstance(relative, str) or not relative or "\x00" in relative:
        raise OutsideProject("empty or invalid path")
    root = Path(root).resolve()
    candidate = (root / relative).resolve()
    if not candidate.is_relative_to(root):
        raise OutsideProject("the path leaves the project directory")
    return candidate


def _host_name(value: str) -> str:
    value = value.strip().lower()
    if value.startswith("["):
        return value[1 : value.find("]")] if "]" in value else value
    return value.rsplit(":", 1)[0] if value.count(":") == 1 else value


def _query_token(query_string: bytes) -> str | None:
    from urllib.parse import parse_qs

    values = parse_qs(query_string.decode("latin-1")).get(TOKEN_QUERY)
    return values[0] if values else None


class GuardMiddleware:
    """ASGI middleware enforcing the token, the host check and the write header."""

    def __init__(
        self,
        app: ASGIApp,
        token: str | None = None,
        allowed_hosts: frozenset[str] | None = None,
    ) -> None:
        self.app = app
        self.token = token
        self.allowed_hosts = allowed_hosts

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        problem = self._problem(scope, headers)
        if problem is not None:
            status, message = problem
            await JSONResponse({"error": message}, status_code=status)(scope, receive, send)
            return
        await self.app(scope, receive, send)

    def _problem(self, scope: Scope, headers: dict[str, str]) -> tuple[int, str] | None:
        if self.allowed_hosts is not None:
            if _host_name(headers.get("host", "")) not in self.allowed_hosts:
                return 403, "unexpected Host header (only local addresses are answered)"
        if self.token is not None:
            given = headers.get(TOKEN_HEADER) or _query_token(scope.get("query_string", b""))
            if not given or not secrets.compare_digest(given.encode(), self.token.encode()):
                return 401, "missing or wrong access token (open the URL the server printed)"
        length = headers.get("content-length", "0")
        if not length.isdigit() or int(length) > MAX_BODY_BYTES:
            return 413, f"request body too large (at most {MAX_BODY_BYTES} bytes)"
        if scope["method"] in _UNSAFE and WRITE_HEADER not in headers:
            return 403, f"changes need the {WRITE_HEADER} header (sent by the explorer page)"
        return None
