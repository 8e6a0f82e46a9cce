"""The HTTP and WebSocket server: daphne, with the limits that must act before the application sees a request.

    python -m callwaiting.server -b 0.0.0.0 -p 8000 callwaiting.asgi:application     (daphne's options, all of them)

Why not plain `daphne`: daphne starts the ASGI application for a request only once twisted has read its whole
body (twisted's HTTPChannel writes the body into the request's content and then calls requestReceived, whose
process() creates the application), so no ASGI middleware can refuse a body before it is read; and what twisted and
autobahn do with a header or a WebSocket frame over their limits never reaches the application at all. daphne builds
these pieces itself, so this module subclasses them and runs daphne's command line with them:

- a body over its route's limit (callwaiting.limits.body_limit) is refused with 413 as soon as the headers declare
  it, and a chunked body as soon as the bytes received pass the limit; nothing of it is kept;
- a /v1/ request with a body over 64 KiB, or chunked, gets its API key checked before its body is read (the project's key lookup, in a
  thread, with the socket not read meanwhile); a missing or bad key is refused with 401;
- a header section over HTTP_MAX_HEADER_BYTES is answered 431 (a request line alone over it, 414), where twisted
  drops the connection without a word (one line over 16 KiB) or answers an empty 400 (all lines over 16 KiB);
- twisted's other answers to malformed requests (an empty 400) and daphne's own error pages (HTML) are given in the
  error shape;
- twisted does not parse POST form and multipart bodies itself: it did so for request args daphne never uses,
  holding a second copy of the body, and answered an empty 400 to a multipart body without a valid boundary
  (which Django answers in the error shape);
- a WebSocket message or frame over WS_MAX_MESSAGE_BYTES gets the error frame `message_too_large` and close 1009,
  where autobahn, as daphne sets it up, drops the TCP connection.

Each of these answers closes the connection. What the client still sends after it is read and thrown away, for
at most LINGER_SECONDS, so that a client still sending its body reads the answer instead of having its connection
reset under it.
"""
import os

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callwaiting.settings")

from daphne.server import Server as DaphneServer  # noqa: E402  (first: it installs twisted's asyncio reactor)

import asyncio  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
from http import HTTPStatus  # noqa: E402
from urllib.parse import unquote  # noqa: E402

from asgiref.sync import sync_to_async  # noqa: E402
from daphne.cli import CommandLineInterface as DaphneCommandLineInterface  # noqa: E402
from daphne.http_protocol import HTTPFactory, WebRequest  # noqa: E402
from daphne.ws_protocol import WebSocketProtocol  # noqa: E402
from django.conf import settings  # noqa: E402
from twisted.internet import reactor  # noqa: E402
from twisted.web.http import HTTPChannel, _GenericHTTPChannelProtocol  # noqa: E402

logger = logging.getLogger(__name__)

LINGER_SECONDS = 5.0
# A body up to this size is read before its key is checked, by the application as usual: reading it costs less
# than a second key lookup (a thread and a query) would on every synthesis request's way to its first audio.
EARLY_KEY_CHECK_BYTES = 64 * 1024
_DAPHNE_ERROR_CODES = {400: "bad_request", 500: "internal_error", 503: "service_unavailable"}


def error_body(code: str, message: str) -> dict:
    """callwaiting.errors.error_body, imported once Django is set up (the server starts before the application)."""
    from callwaiting.errors import error_body

    return error_body(code, message)


def _key_refusal(authorization: str) -> dict | None:
    """The 401 answer's body for a request whose Authorization header does not authenticate, None for a good key:
    the same lookup and the same error bodies as the API's authentication (tenants.authentication). Runs in a
    thread; gives its database connection back (or to the pool) as a finished Django request does."""
    from django.db import close_old_connections
    from rest_framework.exceptions import NotAuthenticated

    from callwaiting.errors import exception_body
    from tenants.authentication import KeyAuthenticationFailed, api_key_from_authorization

    try:
        if api_key_from_authorization(authorization) is None:
            return exception_body(NotAuthenticated())
        return None
    except KeyAuthenticationFailed as exc:
        return exception_body(exc)
    finally:
        close_old_connections()


class GuardedRequest(WebRequest):
    """daphne's request, refusing a body over its route's limit or without a valid key before reading it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, parsePOSTFormSubmission=False, **kwargs)  # see the module docstring
        self._body_path = ""
        self._body_limit = 0
        self._body_received = 0
        self._key_pending = False
        self._received = None  # requestReceived's arguments, held while the key is being checked
        self._continue = False  # a `100 Continue` held while the key is being checked

    def gotLength(self, length):
        """Called by the channel once the headers are in, before any byte of the body: `length` is the declared
        Content-Length, None for a chunked body."""
        super().gotLength(length)
        if not isinstance(self.channel, GuardedChannel):
            return  # HTTP/2 (TLS with twisted's http2 extra; not set up here): daphne's behaviour as it is
        from callwaiting.limits import body_limit, too_large_body

        self._body_path = unquote(self.channel._path.split(b"?", 1)[0].decode("latin-1"))
        self._body_limit, _ = body_limit(self._body_path)
        if length is not None and length > self._body_limit:
            self.channel.refuse(413, too_large_body(self._body_path))
        elif (length is None or length > EARLY_KEY_CHECK_BYTES) and self._body_path.startswith("/v1/"):
            self._check_key()

    def _check_key(self):
        authorization = self.requestHeaders.getRawHeaders(b"authorization", [b""])[0].decode("latin-1")
        self.channel.transport.pauseProducing()  # read no more of the body until the key is known
        self._key_pending = True
        check = asyncio.ensure_future(sync_to_async(_key_refusal, thread_sensitive=False)(authorization))
        check.add_done_callback(self._key_checked)

    def _key_checked(self, check):
        self._key_pending = False
        channel = self.channel
        if channel is None or channel.refused:
            return  # the connection is gone, or the request was refused meanwhile
        try:
            refusal = check.result()
        except Exception:
            logger.exception("checking the API key before the body failed; the application will check it")
            refusal = None
        if refusal is not None:
            channel.refuse(401, refusal, [("WWW-Authenticate", 'Bearer realm="api"')])
            return
        channel.transport.resumeProducing()
        if self._continue:
            channel.send_continue()
        if self._received is not None:
            self.requestReceived(*self._received)

    def handleContentChunk(self, data):
        if not isinstance(self.channel, GuardedChannel):
            return super().handleContentChunk(data)
        if self.channel.refused:
            return
        self._body_received += len(data)
        if self._body_received > self._body_limit:
            from callwaiting.limits import too_large_body

            self.channel.refuse(413, too_large_body(self._body_path))
            return
        super().handleContentChunk(data)

    def requestReceived(self, command, path, version):
        """The whole body is in: hand the request to the application, once its key is known to be good."""
        if getattr(self.channel, "refused", False):
            return
        if self._key_pending:
            self._received = (command, path, version)
            return
        if self.requestHeaders.hasHeader(b"transfer-encoding"):
            # The body was chunked; twisted has decoded it. The application gets it with its length, as any
            # other body (DRF reads a body without Content-Length as empty).
            self.requestHeaders.removeHeader(b"transfer-encoding")
            self.requestHeaders.setRawHeaders(b"content-length", [b"%d" % self.content.tell()])
        super().requestReceived(command, path, version)

    def basic_error(self, status, status_text, body):
        """daphne's own error answers (a bad header or path, an application that failed or timed out)."""
        if status == 500:
            body = "The server failed on this request; it has been logged."
        payload = json.dumps(error_body(_DAPHNE_ERROR_CODES.get(status, "error"), body)).encode()
        self.handle_reply({"type": "http.response.start", "status": status,
                           "headers": [(b"content-type", b"application/json")]})
        self.handle_reply({"type": "http.response.body", "body": payload})


class GuardedChannel(HTTPChannel):
    """twisted's HTTP/1.1 connection, with header limits answered in the error shape and `refuse`, which answers
    a request early and reads (and drops) whatever its client still sends."""

    refused = False
    _linger = None

    def connectionMade(self):
        # One header line may have as much as all of them together (twisted: 16 KiB each).
        self.MAX_LENGTH = self.totalHeadersSize = settings.HTTP_MAX_HEADER_BYTES
        super().connectionMade()

    def refuse(self, status: int, body: dict, headers=()) -> None:
        """Answer now with `status` and `body` (the error shape) and close; nothing more the client sends is read
        into anything."""
        if self.refused or self.transport is None:
            return
        self.refused = True
        payload = json.dumps(body).encode()
        head = [f"HTTP/1.1 {status} {HTTPStatus(status).phrase}", "Content-Type: application/json",
                f"Content-Length: {len(payload)}", "Connection: close", *(f"{name}: {value}" for name, value in headers)]
        self.transport.write("\r\n".join(head).encode() + b"\r\n\r\n" + payload)
        self.transport.resumeProducing()  # a key check may have paused reading: drain the rest
        self.transport.loseWriteConnection()
        self._linger = reactor.callLater(LINGER_SECONDS, self.transport.abortConnection)

    def dataReceived(self, data):
        if not self.refused:
            super().dataReceived(data)

    def _send100Continue(self):
        """`Expect: 100-continue` asks whether to send the body: not when the request is refused, and not before
        its key is known to be good."""
        if self.refused:
            return
        request = self.requests[-1] if self.requests else None
        if getattr(request, "_key_pending", False):
            request._continue = True
            return
        super()._send100Continue()

    def send_continue(self):
        super()._send100Continue()

    def lineReceived(self, line):
        if self.refused:
            return
        if self._receivedHeaderSize + len(line) > self.totalHeadersSize:
            return self._refuse_headers()
        return super().lineReceived(line)

    def rawDataReceived(self, data):
        if not self.refused:
            super().rawDataReceived(data)

    def lineLengthExceeded(self, line):
        self._refuse_headers()

    def _refuse_headers(self):
        limit = self.totalHeadersSize
        if self._HTTPChannel__first_line:
            self.refuse(414, error_body("uri_too_long", f"The request line is over {limit} bytes."))
        else:
            self.refuse(431, error_body(
                "headers_too_large", f"The request's header fields are over {limit} bytes together."))

    def _respondToBadRequestAndDisconnect(self):
        self.refuse(400, error_body("bad_request", "The request is not valid HTTP/1.1."))

    def connectionLost(self, reason):
        if self._linger is not None and self._linger.active():
            self._linger.cancel()
        super().connectionLost(reason)


class GuardedHTTPFactory(HTTPFactory):
    @staticmethod
    def protocol():
        return _GenericHTTPChannelProtocol(GuardedChannel())

    def buildProtocol(self, addr):
        protocol = super().buildProtocol(addr)
        protocol.requestFactory = GuardedRequest
        return protocol


class GuardedWebSocketProtocol(WebSocketProtocol):
    """daphne's WebSocket protocol: a message over the limit gets the error frame and close 1009 (message too big)
    instead of a dropped TCP connection."""

    def _max_message_size_exceeded(self, msg_size, max_msg_size, reason):
        if self.state == self.STATE_OPEN:
            message = f"WebSocket messages are limited to {max_msg_size} bytes; this one has {msg_size}."
            self.sendMessage(json.dumps(error_body("message_too_large", message)).encode(), isBinary=False)
        self.failByDrop = False  # the closing handshake with 1009, then the connection closes
        super()._max_message_size_exceeded(msg_size, max_msg_size, reason)


class Server(DaphneServer):
    """daphne's server with the guarded pieces. daphne's run() builds its two factories itself and keeps them in
    these attributes: the HTTP one is replaced by ours, the WebSocket one gets our protocol."""

    @property
    def http_factory(self):
        return self._http_factory

    @http_factory.setter
    def http_factory(self, factory):
        self._http_factory = GuardedHTTPFactory(self)

    @property
    def ws_factory(self):
        return self._ws_factory

    @ws_factory.setter
    def ws_factory(self, factory):
        factory.protocol = GuardedWebSocketProtocol
        self._ws_factory = factory


class CommandLineInterface(DaphneCommandLineInterface):
    """daphne's command line with this server; the WebSocket size limits default to WS_MAX_MESSAGE_BYTES."""

    server_class = Server

    def __init__(self):
        super().__init__()
        self.parser.set_defaults(websocket_max_message_size=settings.WS_MAX_MESSAGE_BYTES,
                                 websocket_max_frame_size=settings.WS_MAX_MESSAGE_BYTES)


if __name__ == "__main__":
    CommandLineInterface.entrypoint()
