"""The ASGI middleware that callwaiting/asgi.py composes, and the API's own Django handler (import this module
once Django is set up, as asgi.py does).

Outermost first, as asgi.py stacks them:
    RequestCleanupMiddleware    runs what a view registered to clean up after its exchange, however it ended
    DaphneStreamingMiddleware   backpressure and broken transfers for streamed audio under daphne
    BodyLimitMiddleware         a body over its route's limit gets 413 without the rest being read
    EmbeddedWorkerMiddleware    starts the in-process model worker (embedded mode)

Under daphne the server itself refuses bodies over the limit, and bodies without a valid API key, before reading
them (callwaiting/server.py); BodyLimitMiddleware is the same size rule for any ASGI server and in-process tests.
"""
import asyncio
import fcntl
import functools
import json
import logging
import struct
import termios

from asgiref.sync import sync_to_async
from corsheaders.middleware import CorsMiddleware
from django.conf import settings
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler
from django.core.exceptions import SuspiciousOperation
from django.core.handlers.asgi import ASGIHandler
from django.core.handlers.exception import convert_exception_to_response, response_for_exception
from twisted.internet.interfaces import IPushProducer
from zope.interface import implementer

from callwaiting.errors import ClientGone, outage_response
from callwaiting.limits import body_limit, too_large_body
from synthesis.worker import ensure_embedded_worker

logger = logging.getLogger(__name__)


class ApiHandler(ASGIHandler):
    """Django for the API (/v1/...): the same URLconf, views and error handling, without the middleware made
    for browsers (sessions, CSRF, messages, session authentication, clickjacking and security headers). The
    API authenticates by key and answers JSON or audio; and Django runs each of those middleware's sync
    process_request/process_response in a worker thread, two thread hops each, which cost a synthesis about
    10 ms of its first audio.

    CORS (django-cors-headers, async, on the event loop) lives here and only here: the portal and admin never
    answer cross-origin requests. It answers a preflight (OPTIONS with Access-Control-Request-Method) itself,
    before any view, key check or rate limit: a preflight carries no key. Error answers get its headers too,
    so a page can read why it was refused."""

    def load_middleware(self, is_async=False):
        self._view_middleware = []
        self._template_response_middleware = []
        # An outage of Redis or the database escaping a view is its 503 with Retry-After, not a 500.
        self._exception_middleware = [outage_response]
        get_response = CorsMiddleware(convert_exception_to_response(self._get_response_async))

        async def api_headers(request):
            """What the API keeps of CommonMiddleware and SecurityMiddleware, on the event loop."""
            response = await get_response(request)
            if not response.streaming and not response.has_header("Content-Length"):
                response.headers["Content-Length"] = str(len(response.content))
            response.headers.setdefault("X-Content-Type-Options", "nosniff")
            return response

        self._middleware_chain = api_headers


class StaticFilesHandler(ASGIStaticFilesHandler):
    """/static/... served by this process from the apps' static folders (the docs' Swagger UI and ReDoc from
    drf-spectacular-sidecar, the admin's CSS), so neither `make run` nor the production image needs collectstatic,
    a CDN or another server; anything else goes on to `application`.

    Django's handler answers only a missing file itself: a path that climbs out of the static folders
    (/static/../settings.py), which its finders refuse with SuspiciousFileOperation, escaped it as a 500. It is
    Django's 400 here, in the error shape (handler400)."""

    async def get_response_async(self, request):
        try:
            response = await super().get_response_async(request)
        except SuspiciousOperation as exc:
            return await sync_to_async(response_for_exception, thread_sensitive=False)(request, exc)
        if response.status_code == 200:  # the files change only with a deployment: browsers may keep them an hour
            response.headers.setdefault("Cache-Control", "public, max-age=3600")
        return response


def path_router(api_app, site_app):
    """/v1/... to the API's handler, everything else (portal, admin, static) to Django's full stack."""

    async def route(scope, receive, send):
        app = api_app if scope["path"].startswith("/v1/") else site_app
        return await app(scope, receive, send)

    return route


# --- request bodies ---------------------------------------------------------------------------------------

async def send_error(send, status: int, body: dict, headers=()) -> None:
    """A complete JSON answer in the error shape, closing the connection (the rest of the body is not wanted)."""
    payload = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status, "headers": [
        (b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()),
        (b"connection", b"close"), *headers]})
    await send({"type": "http.response.body", "body": payload})


class BodyLimitMiddleware:
    """A request body over its route's limit (body_limit) gets 413 in the error shape: at once when its
    Content-Length declares it, and, for a body that declares no length (chunked), as soon as the bytes received
    pass the limit; the app is then told the client is gone and nothing more of the body is read."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope["path"]
        limit, _ = body_limit(path)
        declared = dict(scope.get("headers", ())).get(b"content-length", b"")
        if declared.isdigit() and int(declared) > limit:
            return await send_error(send, 413, too_large_body(path))
        received = 0
        refused = False

        async def limited_receive():
            nonlocal received, refused
            if refused:
                return {"type": "http.disconnect"}
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    refused = True
                    await send_error(send, 413, too_large_body(path))
                    return {"type": "http.disconnect"}  # Django gives up on the request
            return message

        async def guarded_send(message):
            if not refused:
                await send(message)

        return await self.app(scope, limited_receive, guarded_send)


# --- the embedded model worker -----------------------------------------------------------------------------

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


# --- streaming under daphne, and clean-up after the exchange -------------------------------------------------

def _daphne_protocol(send):
    """daphne's protocol object for this connection (a twisted Request for HTTP, an autobahn protocol for a
    WebSocket; daphne's `send` is partial(server.handle_reply, protocol)), or None under another server."""
    protocol = send.args[0] if isinstance(send, functools.partial) and send.args else None
    return protocol if hasattr(protocol, "registerProducer") else None


class RequestCleanupMiddleware:
    """Runs the clean-ups a view registered for its request (scope["callwaiting.cleanups"], async callables)
    once the exchange is over, however it ended. A streamed body's own `finally` is not enough: Django closes
    only its wrapper of an async body, so a body abandoned mid-stream (client gone, connection dropped) would
    be finalized whenever the garbage collector gets to it."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        cleanups = scope["callwaiting.cleanups"] = []
        try:
            return await self.app(scope, receive, send)
        finally:
            for cleanup in cleanups:
                await cleanup()


def _stop_app(kind: str) -> BaseException:
    """What `send` raises to stop an app whose client is gone or stalled. For HTTP it is what Django expects
    when a client disconnects during its response (CancelledError): Django then finishes the request as usual,
    closing the response and returning the request's database connection. Any other exception would skip that,
    and with a connection pool every such request would keep a connection for good."""
    return asyncio.CancelledError() if kind == "http" else ClientGone()


@implementer(IPushProducer)
class _SocketWritable:
    """Registered with daphne's protocol as a streaming producer: twisted pauses it when the socket's send
    buffer is full (the client reads slower than we write) and resumes it when the buffer drains."""

    def __init__(self):
        self.event = asyncio.Event()
        self.event.set()

    def pauseProducing(self):
        self.event.clear()

    def resumeProducing(self):
        self.event.set()

    def stopProducing(self):
        self.event.set()  # the connection is going away; the app learns it from its disconnect message


class Delivery:
    """How much of what a connection sent reached the client, as far as the server can tell (in the scope as
    "callwaiting.delivery" under daphne, for HTTP and WebSocket): bytes handed to the connection, and how many
    of them the client's side has acknowledged (the socket's send queue and twisted's buffer subtracted).
    Billing reads it: a stream is a success once the client has all of it (`received`), and a client that
    went away is billed for what it got, not for what was made."""

    def __init__(self, connection):
        self.connection = connection  # () -> the twisted transport while the connection is up, else None
        self.sent = 0
        self.delivered = 0
        self._looked_at = (0, 0)  # (sent, queued) at the last look at the queues
        self._stuck = False  # the last look found bytes queued and none taken since the look before

    def observe(self) -> bool:
        """Update `delivered` from the connection's queues; False once the connection is gone. Then the queues
        cannot be read any more: if the client had stopped taking bytes (the queue stuck between two looks),
        what was queued at the last look never reached it; else everything handed over counts as received (a
        client that hangs up as soon as it has what it wanted, before the next look)."""
        queued = _queued_bytes(self.connection())
        if queued is None:
            sent, queued = self._looked_at
            self.delivered = max(self.delivered, sent - queued if self._stuck else self.sent)
            return False
        delivered = self.sent - queued
        # Stuck: bytes were queued at the look before too, and none of them has been taken since.
        self._stuck = queued > 0 and self._looked_at[1] > 0 and delivered <= self._looked_at[0] - self._looked_at[1]
        self._looked_at = (self.sent, queued)
        self.delivered = max(self.delivered, delivered)
        return True

    async def received(self, timeout: float) -> bool:
        """Wait (by polling: twisted reports no acknowledgements) until the client has everything sent so far:
        True; False if it went away first, or took nothing for `timeout` seconds (then it is dropped)."""
        loop = asyncio.get_running_loop()
        deadline, delivered = loop.time() + timeout, self.delivered
        while self.observe():
            if self.delivered >= self.sent:
                return True
            if self.delivered > delivered:  # progress: the client is reading
                deadline, delivered = loop.time() + timeout, self.delivered
            elif loop.time() > deadline:
                self.connection().abortConnection()
                return False
            await asyncio.sleep(0.02)
        return False


def _queued_bytes(connection) -> int | None:
    """Bytes handed to a twisted TCP transport that the peer has not acknowledged yet: twisted's own write
    buffer, plus the kernel's send queue (SIOCOUTQ). None when the connection is gone."""
    if connection is None or connection.disconnected:
        return None
    buffered = len(getattr(connection, "dataBuffer", b"")) - getattr(connection, "offset", 0)
    buffered += getattr(connection, "_tempDataLen", 0)
    try:
        in_kernel = struct.unpack("i", fcntl.ioctl(connection.socket.fileno(), termios.TIOCOUTQ, b"\0" * 4))[0]
    except (AttributeError, OSError, ValueError):
        in_kernel = 0
    return buffered + in_kernel


async def _writable_again(writable: _SocketWritable, delivery: Delivery, timeout: float) -> None:
    """Wait for the socket to take more, looking at what the client received meanwhile (for billing)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not writable.event.is_set():
        if loop.time() > deadline:
            raise asyncio.TimeoutError
        try:
            await asyncio.wait_for(writable.event.wait(), min(0.1, max(0.0, deadline - loop.time())))
        except asyncio.TimeoutError:
            delivery.observe()


class DaphneStreamingMiddleware:
    """Two things streamed audio needs that daphne does not do; under other servers it passes through.

    Backpressure (HTTP and WebSocket): daphne's `send` only appends to twisted's write buffer, so a client
    reading slower than speech is produced would have the audio pile up there. Instead the app waits while
    the socket is full; that stops this stream's reads from its model worker, whose credit window then stops
    the engine (see synthesis/worker.py). A client that reads nothing for TTS_CLIENT_STALL_TIMEOUT seconds is
    disconnected, which cancels its job.

    Broken transfers (HTTP): a response that fails after its headers went out (a model worker died
    mid-stream) must reach the client as a broken transfer, never as a complete-looking short file. ASGI has
    no message for that, and daphne, given the exception, would try to start a 500 on a response already
    started and leave the connection hanging; so the TCP connection is aborted.

    Delivery: what of a stream reached the client (Delivery, in the scope), for billing."""

    # Per protocol: the message that carries data, and the one that ends the exchange.
    _DATA = {"http": "http.response.body", "websocket": "websocket.send"}
    _END = {"http": "http.response.body", "websocket": "websocket.close"}

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        protocol = _daphne_protocol(send) if scope["type"] in self._DATA else None
        if protocol is None:
            return await self.app(scope, receive, send)
        kind = scope["type"]
        writable = _SocketWritable()
        started = registered = False
        delivery = scope["callwaiting.delivery"] = Delivery(lambda: getattr(channel(), "transport", None))

        def channel():
            """The connection's twisted HTTPChannel while the connection is up: the transport calls it when the
            socket fills or drains, and it passes that on to one registered producer. A WebSocket keeps the
            channel it was upgraded from as its transport's producer; an HTTP request loses it on disconnect."""
            holder = protocol.channel if kind == "http" else getattr(protocol.transport, "producer", None)
            connection = getattr(holder, "transport", None)
            up = connection is not None and not connection.disconnected and hasattr(holder, "registerProducer")
            return holder if up else None

        def unregister():
            nonlocal registered
            if registered and (up := channel()) is not None:
                up.unregisterProducer()
            registered = False

        async def paced_send(message):
            nonlocal started, registered
            started = started or message["type"] == "http.response.start"
            more = message["type"] == self._DATA[kind] and (kind == "websocket" or message.get("more_body", False))
            if more and not registered and (up := channel()) is not None:
                up.registerProducer(writable, True)
                registered = True
                if getattr(up, "_waitingForTransport", False):
                    writable.pauseProducing()  # twisted tells a producer only about later changes
            if message["type"] == self._END[kind] and not more:
                unregister()  # before the exchange ends, so a pipelined next request may register its own
            if message["type"] == self._DATA[kind]:
                delivery.observe()
                delivery.sent += len(message.get("body" if kind == "http" else "bytes") or b"")
            await send(message)
            if more and registered and channel() is None:
                # The client hung up. Stop the app at once: it would otherwise stream on into the void (with
                # credit flowing, the whole clip; daphne drops what is sent to a closed WebSocket without a
                # word) before it hears of the disconnect, and bill it as delivered.
                raise _stop_app(kind)
            if more and not writable.event.is_set():
                try:
                    await _writable_again(writable, delivery, settings.TTS_CLIENT_STALL_TIMEOUT)
                except asyncio.TimeoutError:
                    logger.info("dropping %s: its client read nothing for %g s", scope["path"],
                                settings.TTS_CLIENT_STALL_TIMEOUT)
                    if (up := channel()) is not None:
                        up.transport.abortConnection()
                    # Stop the app now: it would otherwise run on into a dead connection before it hears of it.
                    raise _stop_app(kind) from None
                if channel() is None:
                    raise _stop_app(kind)  # woken because the connection is gone

        try:
            await self.app(scope, receive, paced_send)
        except ClientGone:
            pass  # its client is gone; the app's own clean-up has recorded it
        except Exception:
            if not started or (up := channel()) is None:
                raise
            logger.warning("aborting %s: the response failed after it had started", scope["path"], exc_info=True)
            up.transport.abortConnection()
        finally:
            unregister()
