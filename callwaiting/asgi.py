"""ASGI entry point: HTTP (Django) now, WebSocket routes join here through Channels' ProtocolTypeRouter."""
import asyncio
import functools
import json
import logging
import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callwaiting.settings")
django_application = get_asgi_application()
logger = logging.getLogger(__name__)

from channels.routing import ProtocolTypeRouter  # noqa: E402  (needs Django set up)
from django.conf import settings  # noqa: E402

from callwaiting.errors import error_body  # noqa: E402

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


class UploadSizeLimitMiddleware:
    """Refuse an upload that declares a body over the limit before any of it is read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http" and scope["path"] == "/v1/voices/upload":
            declared = dict(scope.get("headers", ())).get(b"content-length", b"0")
            limit = settings.TTS_MAX_UPLOAD_BYTES + 64 * 1024  # room for the form's other fields
            if declared.isdigit() and int(declared) > limit:
                body = json.dumps(error_body("upload_too_large", f"Uploads are limited to {limit} bytes.")).encode()
                await send({"type": "http.response.start", "status": 413,
                            "headers": [(b"content-type", b"application/json"), (b"connection", b"close")]})
                await send({"type": "http.response.body", "body": body})
                return
        return await self.app(scope, receive, send)


class BrokenStreamMiddleware:
    """A response that fails after its headers went out (a model worker died mid-stream) must reach the client
    as a broken transfer, never as a complete-looking short file. ASGI has no message for that, and daphne,
    given the exception, would try to start a 500 on a response already started and leave the connection
    hanging; so the TCP connection is aborted through daphne's protocol object (its `send` is
    partial(server.handle_reply, protocol)). Under other servers the exception propagates as usual."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        started = False

        async def tracking_send(message):
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception:
            transport = _daphne_transport(send)
            if not started or transport is None:
                raise
            logger.warning("aborting %s: the response failed after it had started", scope["path"], exc_info=True)
            transport.abortConnection()


def _daphne_transport(send):
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    channel = getattr(protocol, "channel", None)
    transport = getattr(channel, "transport", None)
    return transport if hasattr(transport, "abortConnection") else None


application = BrokenStreamMiddleware(
    UploadSizeLimitMiddleware(EmbeddedWorkerMiddleware(ProtocolTypeRouter({"http": django_application})))
)
