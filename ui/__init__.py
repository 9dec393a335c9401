"""The trader web UI: static ES modules and CSS under `ui/static/`, served by the API at `/`.

No build step: the browser loads `index.html`, `js/*.js` and the vendored
lightweight-charts module as they are. `ui_router()` serves them with a strict
Content-Security-Policy (scripts and connections only to this origin), no framing,
and no caching of `index.html`, so a new version is picked up on reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from litestar import Router
from litestar.static_files import create_static_files_router

STATIC_DIR: Final = Path(__file__).resolve().parent / "static"
SECURITY_HEADERS: Final = {
    # Inline styles are allowed (the chart library sets them); inline scripts are not.
    "Content-Security-Policy": ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; "
                                "img-src 'self' data:; connect-src 'self' ws: wss:; frame-ancestors 'none'; "
                                "base-uri 'none'; form-action 'self'"),
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-cache",
}


async def _security_headers(response: Any) -> Any:
    response.headers.update(SECURITY_HEADERS)
    return response


def ui_router() -> Router:
    """The static files of the UI at `/` (`/` itself is `index.html`)."""
    return create_static_files_router(path="/", directories=[STATIC_DIR], html_mode=True, name="ui",
                                      after_request=_security_headers)
