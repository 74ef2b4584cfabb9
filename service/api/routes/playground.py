"""The playground: a static page at `/` (assets under `/playground/`) for trying generations and adapters.

No authentication here: the page holds no data. The key the user types is sent by the page itself, as
`Authorization: Bearer`, on every API call, so the API routes stay exactly as protected as before.

The page and its assets carry a strict Content-Security-Policy and framing headers: the page handles an API
key, so no other site may frame it (clickjacking the key field), and no script but its own modules may run
in it. What the page needs, and nothing more: its own scripts and stylesheet (no inline ones), fetch() to
this origin, and `data:` images (results come back as base64 PNGs).
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

STATIC_DIR = Path(str(files("service") / "playground" / "static"))
MOUNT_PATH = "/playground"

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'none'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "connect-src 'self'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
SECURITY_HEADERS = {
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Frame-Options": "DENY",  # frame-ancestors for browsers that predate it
    "X-Content-Type-Options": "nosniff",  # a .js or .css is only ever run as what its Content-Type says
    "Referrer-Policy": "no-referrer",
}

router = APIRouter(include_in_schema=False)


class WithSecurityHeaders:
    """An ASGI app that adds SECURITY_HEADERS to every answer of `app` (the static files' mount)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in SECURITY_HEADERS.items():
                    headers[name] = value
            await send(message)

        await self.app(scope, receive, send_with_headers)


# Mounted by `create_app` (a router cannot carry a mount). `check_dir`: a missing package-data directory
# fails when the app is built, not with a 404 on someone's first visit.
static = WithSecurityHeaders(StaticFiles(directory=STATIC_DIR, check_dir=True))


@router.get("/")
async def index() -> FileResponse:
    # no-cache: the page is tiny and changes with the server; a stale one would call routes that moved.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache", **SECURITY_HEADERS})
