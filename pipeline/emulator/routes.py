"""The emulator's aiohttp application: which path each handler serves, and closing the state with the app."""

from __future__ import annotations

from aiohttp import web

from .actions import VoiceActions
from .core import Emulator
from .protocol import CUSTOMIZATION_PATH, OSS_UPLOAD_PATH, UPLOADS_PATH, WS_PATH
from .synthesis import SynthesisHandler
from .uploads import Uploads

MAX_BODY_BYTES = 1024 * 1024


def build_app(emulator: Emulator) -> web.Application:
    """Enrollment, uploads and synthesis on one port; ``emulator`` is closed with the app."""
    uploads = Uploads(emulator)
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app.router.add_post(CUSTOMIZATION_PATH, VoiceActions(emulator, uploads).handle)
    app.router.add_get(UPLOADS_PATH, uploads.handle_get_policy)
    app.router.add_post(OSS_UPLOAD_PATH, uploads.handle_form_upload)
    app.router.add_get(WS_PATH, SynthesisHandler(emulator).handle)

    async def _close(_app: web.Application) -> None:
        await emulator.close()

    app.on_cleanup.append(_close)
    return app
