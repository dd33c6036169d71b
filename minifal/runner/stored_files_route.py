"""``GET /files/<path>``: the files an App stored in the data dir, by the URLs it handed out.

A runner serves them (``minifal serve``) and so does the gateway (``minifal run``), with this one
handler: both read the same data dir.
"""

from __future__ import annotations

from fastapi.responses import FileResponse, JSONResponse, Response

STORED_FILES_PATH = "/files/{relative:path}"


async def stored_file(relative: str) -> Response:
    """The stored file, or fal's 404 body; never anything outside ``DATA_DIR/files``."""
    from minifal.toolkit.file import resolve_stored_file  # the toolkit only once a file is asked

    path = resolve_stored_file(relative)
    if path is None:
        return JSONResponse({"detail": f"Path /files/{relative} not found"}, 404)
    return FileResponse(path)
