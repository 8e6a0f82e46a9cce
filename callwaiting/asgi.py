"""ASGI entry point: HTTP (Django) now, WebSocket routes join here through Channels' ProtocolTypeRouter."""
import asyncio
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callwaiting.settings")
django_application = get_asgi_application()

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up)
from django.conf import settings  # noqa: E402

from synthesis.worker import ensure_embedded_worker  # noqa: E402


class EmbeddedWorkerMiddleware:
    """In the embedded mode, start the model worker on the server's event loop with the first request and
    give it a moment to load, so even the first health check sees its engines."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] in ("http", "websocket"):
            worker = ensure_embedded_worker()
            if worker is not None and not worker.ready.is_set():
                try:
                    await asyncio.wait_for(worker.ready.wait(), settings.TTS_JOB_ACCEPT_TIMEOUT)
                except asyncio.TimeoutError:
                    pass  # health will say the engines are still loading
        return await self.app(scope, receive, send)


application = EmbeddedWorkerMiddleware(ProtocolTypeRouter({"http": django_application}))
