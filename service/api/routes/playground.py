"""The playground: a static page at `/` (assets under `/playground/`) for trying generations and adapters.

No authentication here: the page holds no data. The key the user types is sent by the page itself, as
`Authorization: Bearer`, on every API call, so the API routes stay exactly as protected as before.
"""

from __future__ import annotations

from importlib.resources import files
from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(str(files("service") / "playground" / "static"))
MOUNT_PATH = "/playground"

router = APIRouter(include_in_schema=False)

# Mounted by `create_app` (a router cannot carry a mount). `check_dir`: a missing package-data directory
# fails when the app is built, not with a 404 on someone's first visit.
static = StaticFiles(directory=STATIC_DIR, check_dir=True)


@router.get("/")
async def index() -> FileResponse:
    # no-cache: the page is tiny and changes with the server; a stale one would call routes that moved.
    return FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})
