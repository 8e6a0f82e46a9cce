"""WebSocket API `/v1/stream`: speech for one utterance after another on one connection, cancellable at once.

Made for servers (voice agents, telephony bridges) that speak sentence after sentence into a live call, and
for browsers through a WebSocket token.

Handshake
    `Authorization: Bearer sk_...`, a key with the `synthesize` scope, checked as for REST. Browsers cannot
    set that header on a WebSocket: they connect to `/v1/stream?token=wst_...` with a token from
    POST /v1/stream/token, short-lived and single-use, bound to the key that asked for it (the connection then
    acts as that key). Keys in the query string are not accepted: URLs end up in access logs. A refusal is
    answered after accepting the connection, so the client can read why: the error frame, then close 4401 (no,
    invalid, revoked or expired key; a token unknown, expired or already used: invalid_stream_token) or 4403
    (missing scope).

Client -> server: JSON text frames
    {"type": "synthesize", "text": "..." or "ssml": "<speak>...</speak>", "voice_id": "default",
     "language": "", "speed": 1.0, "format": "pcm", "sample_rate": null, "request_id": "<uuid>", "cache": true}
        The fields of POST /v1/synthesize, validated the same way; `streaming` means nothing here and is
        ignored. `format` defaults to "pcm" (also wav, mulaw, alaw, mp3, opus, flac; `sample_rate` as in REST).
        `cache` (optional) serves a repeated phrase from the phrase cache (worker_id "phrase-cache" on its
        "start"); absent, the tenant's setting decides. `request_id` (optional) makes billing idempotent: an utterance
        sent again with the same id is billed once. Utterances are served in order, one at a time; up to
        16 may wait behind the one in flight.
    {"type": "cancel"}
        Barge-in (the caller interrupted): stops the utterance in flight at once, cancelling its job on the
        model worker, and drops the queued ones. Answered with "cancelled" for the one in flight; with
        nothing in flight there is nothing to stop and no answer.

Server -> client, per utterance
    {"type": "start", "request_id", "voice_id", "sample_rate", "format", "worker_id"}      text frame
    the audio as it is produced                                                            binary frames
        16-bit mono little-endian PCM at `sample_rate`; with "wav" the first frame begins with a streaming
        WAV header (sizes 0xFFFFFFFF: unknown while streaming); mulaw/alaw: one byte a sample; mp3, opus (Ogg)
        and flac: the file's bytes in order (frames need not align with codec frames; concatenate them).
    {"type": "done", "request_id", "characters", "audio_seconds"}                          text frame
    or, after a cancel, {"type": "cancelled", "request_id"}

Errors
    One text frame in the API's one error shape, {"error": {"code": "...", "message": "..."}}, then the
    server closes with 4000 + the HTTP status POST /v1/synthesize would answer with. The utterance in flight
    stops and queued ones are dropped; a client reconnects to go on.
    4400  malformed JSON, unknown message type, binary frame from the client, invalid field or request_id
    4401  key missing or invalid; revoked or expired since the handshake (checked again per utterance)
    4402  monthly character quota reached                4403  key lacks the synthesize scope
    4404  no such voice (or WebSocket path)              4409  voice not ready (still processing)
    4413  text too long                                  4422  language the voice does not speak
    4429  tenant rate limit, tenant stream limit, or more than 16 utterances queued (too_many_queued)
    4503  voice or engine unavailable, no model worker free, the worker died mid-stream (worker_lost)
    Each utterance is checked when its turn comes: the key, the tenant's rate limits, then quota, concurrent
    streams, voice and language exactly as in REST (SynthesisSession).

Billing: one usage row per utterance, as in REST: success, error, or client_disconnected for an utterance
cancelled or cut off by the client going away (its worker job is cancelled too).
"""
import asyncio
import collections
import json
import logging
import uuid
from contextlib import aclosing
from dataclasses import dataclass
from urllib.parse import parse_qs

from asgiref.sync import ThreadSensitiveContext
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from rest_framework import exceptions, status

from callwaiting.errors import ApiError, ClientGone, as_api_error, error_body, error_code, exception_body
from synthesis.serializers import StreamSynthesizeSerializer
from synthesis.services import SynthesisSession, parse_request_id
from tenants.authentication import api_key_from_stream_token, api_key_recheck, authenticate_authorization_header
from tenants.models import ApiKey, UsageRecord
from tenants.permissions import require_scope
from tenants.services import api_key_mark_used
from tenants.throttling import tenant_rate_wait

logger = logging.getLogger(__name__)

MAX_QUEUED = 16
CLOSE_CODE_BASE = 4000  # + the HTTP status REST would answer with
_INTERNAL_ERROR = ApiError("internal_error", "The server failed on this request; it has been logged.", 500)


@dataclass(frozen=True)
class Utterance:
    request_id: uuid.UUID
    named_by_client: bool  # the client sent request_id (a retry is billed once), or one was made for it
    data: dict  # validated StreamSynthesizeSerializer data


def _authenticate(authorization: str | None, stream_token: str | None) -> ApiKey:
    """The handshake's key, from the Authorization header or else a WebSocket token (redeemed here, once), and
    its synthesize scope, checked as DRF checks them for POST /v1/synthesize."""
    api_key = authenticate_authorization_header(authorization)
    if api_key is None and stream_token:
        api_key = api_key_from_stream_token(stream_token)
    if api_key is None:
        raise ApiError(
            "authentication_required",
            "An API key is required: Authorization: Bearer <api_key>, or (browsers) ?token= from POST /v1/stream/token.",
            status.HTTP_401_UNAUTHORIZED,
        )
    require_scope(api_key, "synthesize")
    return api_key


def _admit(api_key: ApiKey, utterance: Utterance) -> SynthesisSession:
    """Everything before the audio, in one thread: the handshake's key again (it may have been revoked since),
    the tenant's rate limits, then the session's own checks. Raises APIException."""
    api_key = api_key_recheck(api_key)
    require_scope(api_key, "synthesize")
    api_key_mark_used(api_key=api_key)
    try:
        wait = tenant_rate_wait(api_key)
    except Exception as exc:
        raise as_api_error(exc)  # Redis down: 4503 service_unavailable rather than an internal error
    if wait:
        raise exceptions.Throttled(wait=wait)
    session = SynthesisSession(
        api_key=api_key, request_id=utterance.request_id, named_by_client=utterance.named_by_client
    )
    try:
        session.prepare(utterance.data)
    except Exception as exc:
        error = as_api_error(exc)
        if not isinstance(error, ApiError):
            raise
        session.refuse(error.code)
        raise error from None
    return session


def _parse(text_data: str | None) -> dict:
    if text_data is None:
        raise ApiError("binary_frame", "Send JSON text frames; binary frames only flow from the server (audio).")
    try:
        message = json.loads(text_data)
    except ValueError as exc:
        raise ApiError("malformed_request", f"The frame is not valid JSON: {exc}.") from None
    except RecursionError:
        raise ApiError("malformed_request", "The frame is not valid JSON: nested too deeply.") from None
    if not isinstance(message, dict):
        raise ApiError("malformed_request", "Each frame must be a JSON object with a 'type'.")
    return message


class StreamConsumer(AsyncWebsocketConsumer):
    """Thin: the receive handler validates and queues; a background task serves the queue through
    SynthesisSession, so a `cancel` is read while audio is being sent."""

    # Nothing is addressed to this consumer over the channel layer (audio comes on each job's own reply
    # channel), so it does not hold a channel of its own there.
    channel_layer_alias = None

    async def __call__(self, scope, receive, send):
        # The connection's database work in a thread of its own, as Django gives each HTTP request: Channels'
        # default is one thread for every connection of the process, where under load a handshake's key check
        # waits behind everyone else's work and times out.
        async with ThreadSensitiveContext():
            return await super().__call__(scope, receive, send)

    async def connect(self):
        self.api_key: ApiKey | None = None
        self.queue: collections.deque[Utterance] = collections.deque()
        self.current: Utterance | None = None  # the utterance in flight
        self.runner: asyncio.Task | None = None  # serves the queue while it is not empty
        self.closing = False
        authorization = dict(self.scope["headers"]).get(b"authorization", b"").decode("latin-1")
        # The token is never logged here; daphne's access log shows the path without the query string.
        stream_token = parse_qs(self.scope.get("query_string", b"").decode("latin-1")).get("token", [None])[0]
        # Accept before checking the key: a refused handshake reaches the client as a bare HTTP 403.
        await self.accept()
        try:
            self.api_key = await database_sync_to_async(_authenticate)(authorization, stream_token)
        except Exception as exc:
            error = as_api_error(exc)  # the database down: 4503 service_unavailable, not a dropped connection
            if not isinstance(error, exceptions.APIException):
                raise
            await self._fail(error)

    async def receive(self, text_data=None, bytes_data=None):
        if self.closing:
            return  # sent before the client saw our close
        try:
            message = _parse(text_data)
            kind = message.get("type")
            if kind == "synthesize":
                await self._enqueue(message)
            elif kind == "cancel":
                await self._cancel()
            else:
                raise ApiError("unknown_message_type", f"Unknown message type {kind!r}; send 'synthesize' or 'cancel'.")
        except exceptions.APIException as exc:
            await self._fail(exc)

    async def disconnect(self, code):
        self.closing = True
        await self._stop()

    # --- the queue ------------------------------------------------------------------------------------------
    async def _enqueue(self, message: dict) -> None:
        named = parse_request_id(message.get("request_id"), "request_id")
        request_id = named or uuid.uuid4()
        serializer = StreamSynthesizeSerializer(data=message)
        try:
            serializer.is_valid(raise_exception=True)
        except exceptions.ValidationError as exc:
            # As in REST, a request refused for its fields still gets its usage row.
            refused = SynthesisSession(api_key=self.api_key, request_id=request_id, named_by_client=named is not None)
            await refused.end(UsageRecord.Status.ERROR, error_code(exc))
            raise
        if len(self.queue) >= MAX_QUEUED:
            raise ApiError(
                "too_many_queued", f"At most {MAX_QUEUED} utterances may wait behind the one being spoken.",
                status.HTTP_429_TOO_MANY_REQUESTS,
            )
        self.queue.append(Utterance(request_id=request_id, named_by_client=named is not None,
                                    data=serializer.validated_data))
        if self.runner is None or self.runner.done():
            self.runner = asyncio.create_task(self._serve_queue())

    async def _serve_queue(self) -> None:
        while self.queue and not self.closing:
            self.current = self.queue.popleft()
            try:
                done = await self._speak(self.current)
            except ClientGone:  # hung up or stalled: the utterance is billed as such; nobody to tell
                self.closing = True
                return
            except exceptions.APIException as exc:
                await self._close_with(exc)
                return
            except Exception as exc:
                error = as_api_error(exc)  # Redis unreachable: 4503 service_unavailable, not an internal error
                if error is exc:
                    logger.exception("stream %s failed", self.current.request_id)
                await self._close_with(error if error is not exc else _INTERNAL_ERROR)
                return
            self.current = None  # the audio is all out: a cancel from here on has nothing to stop
            await self._send_json(done)

    async def _speak(self, utterance: Utterance) -> dict:
        """One utterance, from its checks to its last audio frame; returns the done frame."""
        admit = asyncio.ensure_future(database_sync_to_async(_admit)(self.api_key, utterance))
        try:
            session = await asyncio.shield(admit)
        except asyncio.CancelledError:
            # A thread cannot be interrupted: let the checks finish, then give back the stream slot they took.
            await asyncio.wait([admit])
            if not admit.cancelled() and admit.exception() is None:
                await admit.result().abandon()
            raise
        session.attach_delivery(self.scope.get("callwaiting.delivery"))
        try:
            first = await session.start()
            await self._send_json({
                "type": "start", "request_id": str(session.request_id), "voice_id": session.voice_id,
                "sample_rate": session.sample_rate, "format": session.audio_format,
                "worker_id": session.stream.worker_id,
            })
        except BaseException:  # cancelled, or the start frame could not go out: no audio will follow
            await session.abandon()
            raise
        # Cancelling this task (cancel, disconnect) closes the body generator, whose own cleanup cancels the
        # worker job and bills the utterance as client_disconnected. A worker failing mid-stream (DispatchError, an
        # ApiError) reaches the client as the error frame; stream_body has billed it as an error.
        async with aclosing(session.stream_body(first)) as body:
            async for chunk in body:
                if chunk:
                    await self.send(bytes_data=chunk)
        return {
            "type": "done", "request_id": str(session.request_id), "characters": session.characters,
            "audio_seconds": round(session.audio_seconds, 4),
        }

    async def _cancel(self) -> None:
        stopped = await self._stop()
        if stopped is not None:
            await self._send_json({"type": "cancelled", "request_id": str(stopped.request_id)})

    async def _stop(self) -> Utterance | None:
        """Drop the queued utterances and stop the one in flight; returns that one, if any."""
        self.queue.clear()
        stopped = self.current
        if self.runner is None:
            return None
        if stopped is not None:
            self.runner.cancel()
        await asyncio.wait([self.runner])  # no frame of the stopped utterance may follow
        self.current = None
        return stopped

    # --- frames ---------------------------------------------------------------------------------------------
    async def _send_json(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))

    async def _fail(self, exc: exceptions.APIException) -> None:
        """From the receive side: stop everything, then the error frame and the close."""
        self.closing = True
        await self._stop()
        await self._close_with(exc)

    async def _close_with(self, exc: exceptions.APIException) -> None:
        self.closing = True
        self.queue.clear()
        await self._send_json(exception_body(exc))
        await self.close(code=CLOSE_CODE_BASE + exc.status_code)


class UnknownPathConsumer(AsyncWebsocketConsumer):
    """Any other WebSocket path: the not_found error frame and close 4404, rather than a routing traceback."""

    channel_layer_alias = None

    async def connect(self):
        await self.accept()
        message = f"No WebSocket endpoint at {self.scope['path']}; use /v1/stream."
        await self.send(text_data=json.dumps(error_body("not_found", message)))
        await self.close(code=CLOSE_CODE_BASE + status.HTTP_404_NOT_FOUND)
