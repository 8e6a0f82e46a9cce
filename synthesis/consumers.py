"""WebSocket API `/v1/stream`: speech for one utterance after another on one connection, cancellable at once.

Made for servers (voice agents, telephony bridges) that speak sentence after sentence into a live call, whole
utterances (`synthesize`) or an LLM's text as it is generated (`text` pieces, spoken sentence by sentence), and
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
        16 may wait behind the one in flight. Text buffered from `text` pieces is not flushed by it.
    {"type": "text", "text": "Hello, wo", "voice_id", "language", "speed", "format", "flush": false}
        A piece of text of any size (an LLM's token; at most TTS_MAX_TEXT_CHARS characters), appended to the
        connection's buffer. Each sentence completed in the buffer becomes an utterance of its own, queued
        like a `synthesize` message (same checks, rate limit and usage row each; the request id is the
        server's, in its start frame; sentences with nothing to say, such as "---", are skipped). A sentence
        ends at . ! ? or an ellipsis followed by a space, at CJK 。！？, or at a newline; a period counts only
        once the next non-space character shows it ended the sentence ("3.5", "Dr. Smith", "e.g. apples",
        "U.S. Army" and "well... maybe" are not cut: synthesis/text_stream.py has the rules), so the last
        sentence of a turn waits for a `flush`. Text that runs TTS_STREAM_SENTENCE_MAX_CHARS (300) without
        an end is spoken up to its last clause boundary (, ; : dashes) or space.
        The optional fields are those of `synthesize` (without ssml and request_id, which are refused) and
        apply from this piece on, until a later piece changes them (defaults: "default", "", 1.0, "pcm").
        A sentence is spoken with the fields in effect at its first character. `"flush": true` flushes
        after the piece.
    {"type": "flush"}
        Speak what is buffered now, though its sentence has not ended (the end of an LLM's turn).
    {"type": "cancel"}
        Barge-in (the caller interrupted): stops the utterance in flight at once, cancelling its job on the
        model worker, and drops the queued ones and the buffered text. Answered with "cancelled" for the one
        in flight; with nothing in flight there is nothing to stop and no answer. The fields set by `text`
        pieces stay in effect.

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
    4401  key missing or invalid; revoked or expired since the handshake (checked again per utterance);
          a stream token unknown, expired or already used (invalid_stream_token)
    4402  monthly character quota reached                4403  key lacks the synthesize scope
    4404  no such voice (or WebSocket path)              4409  voice not ready (still processing)
    4413  text too long                                  4422  language the voice does not speak
    4429  tenant rate limit, tenant stream limit, or more than 16 utterances queued (too_many_queued)
    4503  voice or engine unavailable, no model worker free, the worker died mid-stream (worker_lost)
    Each utterance is checked when its turn comes: the key, the tenant's rate limits, then quota, concurrent
    streams, voice and language exactly as in REST (SynthesisSession). A `text` piece's own fields are
    checked when it arrives (4400, 4413); its sentences' voice and language at their turn (4404, 4422...).

No gaps between utterances: once the worker has made all the audio of the utterance in flight (the rest of
it is still on its way to the listener), the next queued utterance is checked and its job started, and its
first audio waits for its turn. So the listener hears the next sentence right after the current one, with
no time to first audio in between. It counts as one of the tenant's concurrent streams meanwhile; when the
tenant has none free, it is started at its turn instead (and counted once against the rate limit).

Billing: one usage row per utterance, as in REST: success, error, or client_disconnected for an utterance
cancelled or cut off by the client going away (its worker job is cancelled too). An utterance started ahead
of its turn and dropped by a cancel is client_disconnected with no audio. A text piece refused for its
fields is not a request and gets no row; buffered text that was never spoken is not billed.
"""
import asyncio
import collections
import json
import logging
import uuid
from contextlib import aclosing
from collections.abc import Awaitable
from dataclasses import dataclass
from urllib.parse import parse_qs

from asgiref.sync import ThreadSensitiveContext
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from django.conf import settings
from rest_framework import exceptions, status

from callwaiting.errors import ApiError, ClientGone, as_api_error, error_body, error_code, exception_body
from synthesis.serializers import StreamSynthesizeSerializer, StreamTextSerializer
from synthesis.services import SynthesisSession, parse_request_id
from synthesis.text_stream import SentenceBuffer
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


class _NoRoomAhead(Exception):
    """The next utterance, admitted ahead of its turn, found the tenant's streams all in use (the one being
    spoken holds one): it is admitted again at its turn, when that one has given its stream back."""


@dataclass
class _Ahead:
    """The next utterance, its job started while the current one is still on its way to the listener."""

    utterance: Utterance
    ready: asyncio.Task  # -> (SynthesisSession, first audio chunk)
    keeper: asyncio.Task  # keeps its worker job alive while it waits for its turn

    @classmethod
    def start(cls, ready: Awaitable[tuple[SynthesisSession, bytes]], utterance: Utterance) -> "_Ahead":
        ready_task = asyncio.ensure_future(ready)
        return cls(utterance, ready_task, asyncio.create_task(_keep_alive(ready_task)))


async def _keep_alive(ready: asyncio.Task) -> None:
    """While an utterance made ahead waits for its turn (the listener is still receiving the current one, which
    can take a while: socket buffers hold many seconds of audio), its worker hears from this process now and
    then, so it does not give the job up."""
    try:
        session, _ = await asyncio.shield(ready)
    except BaseException:
        return  # it failed (the error is for its turn), or this keeper is stopped
    while not session.stream.finished:
        await asyncio.sleep(settings.TTS_CLIENT_STALL_TIMEOUT / 3)
        await asyncio.shield(session.stream.keep_alive())  # a send to Redis is never cut in the middle


def _authenticate(authorization: str | None, stream_token: str | None = None) -> ApiKey:
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


def _admit(api_key: ApiKey, utterance: Utterance, *, ahead: bool = False, count_rate: bool = True
           ) -> SynthesisSession:
    """Everything before the audio, in one thread: the handshake's key again (it may have been revoked since),
    the tenant's rate limits, then the session's own checks. Raises APIException, or _NoRoomAhead for an
    utterance admitted `ahead` of its turn that found no stream free."""
    api_key = api_key_recheck(api_key)
    require_scope(api_key, "synthesize")
    api_key_mark_used(api_key=api_key)
    if count_rate:  # not again for an utterance that was counted when it was tried ahead of its turn
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
        if ahead and error.code == "too_many_streams":
            session.withdraw()
            raise _NoRoomAhead() from None
        session.refuse(error.code)
        raise error from None
    return session


async def _discard(ahead: _Ahead | None) -> None:
    """Stop an utterance started ahead of its turn: its job is cancelled, and it is billed as
    client_disconnected for no audio (none of it was sent)."""
    if ahead is None:
        return
    ahead.keeper.cancel()
    ahead.ready.cancel()  # if it is still getting ready, its own cleanup gives back what it took
    await asyncio.wait([ahead.ready])
    if not ahead.ready.cancelled() and ahead.ready.exception() is None:
        session, _ = ahead.ready.result()
        await session.abandon()


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
        self.current_made = False  # ... and its audio is all made (what is left is on its way to the client)
        self.ahead: _Ahead | None = None  # the next one, started ahead of its turn
        self.runner: asyncio.Task | None = None  # serves the queue while it is not empty
        # Streamed text ("text" messages): what has not made a sentence yet, and the fields it is spoken with.
        self.text = SentenceBuffer(max_chars=min(settings.TTS_STREAM_SENTENCE_MAX_CHARS, settings.TTS_MAX_TEXT_CHARS))
        self.text_fields: dict = {}
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
            elif kind == "text":
                self._add_text(message)
            elif kind == "flush":
                self._queue_sentences(self.text.flush())
            elif kind == "cancel":
                await self._cancel()
            else:
                raise ApiError(
                    "unknown_message_type",
                    f"Unknown message type {kind!r}; send 'synthesize', 'text', 'flush' or 'cancel'.",
                )
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
        self._queue(Utterance(request_id=request_id, named_by_client=named is not None, data=serializer.validated_data))

    def _add_text(self, message: dict) -> None:
        """A piece of streamed text: the sentences it completes are queued as utterances of their own."""
        serializer = StreamTextSerializer(data=message)
        serializer.is_valid(raise_exception=True)
        fields = dict(serializer.validated_data)
        piece, flush = fields.pop("text"), fields.pop("flush")
        self.text_fields = {**self.text_fields, **fields}
        sentences = self.text.feed(piece, self.text_fields)
        self._queue_sentences(sentences + (self.text.flush() if flush else []))

    def _queue_sentences(self, sentences: list[tuple[str, dict]]) -> None:
        for sentence, fields in sentences:
            # The fields were valid on their own; together with the sentence they make a synthesize message.
            serializer = StreamSynthesizeSerializer(data={**fields, "text": sentence})
            serializer.is_valid(raise_exception=True)
            self._queue(Utterance(request_id=uuid.uuid4(), named_by_client=False, data=serializer.validated_data))

    def _queue(self, utterance: Utterance) -> None:
        if len(self.queue) + (self.ahead is not None) >= MAX_QUEUED:
            raise ApiError(
                "too_many_queued", f"At most {MAX_QUEUED} utterances may wait behind the one being spoken.",
                status.HTTP_429_TOO_MANY_REQUESTS,
            )
        self.queue.append(utterance)
        if self.runner is None or self.runner.done():
            self.runner = asyncio.create_task(self._serve_queue())
        else:
            self._start_ahead()

    def _start_ahead(self) -> None:
        """Start the next utterance's job once the worker has made all of the current one (a credit window of
        its audio may still wait here, and more in the socket's buffers), so that its first audio is ready when
        the listener has heard the current one: no silence between them. Not before: the two would hold two
        worker slots (batch rows) for one listener, the next one parked on its credit window meanwhile."""
        if self.current_made and self.ahead is None and self.queue and not self.closing:
            utterance = self.queue.popleft()
            self.ahead = _Ahead.start(self._ready(utterance, ahead=True), utterance)

    async def _when_made(self, session: SynthesisSession) -> None:
        await session.stream.all_made()
        self.current_made = True
        self._start_ahead()

    async def _serve_queue(self) -> None:
        try:
            while not self.closing:
                ahead, self.ahead = self.ahead, None
                if ahead is None and not self.queue:
                    return
                self.current = ahead.utterance if ahead is not None else self.queue.popleft()
                self.current_made = False
                try:
                    if ahead is not None:
                        ahead.keeper.cancel()  # its turn: it is read from now on
                    done = await self._speak(self.current, ahead.ready if ahead is not None else None)
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
                self.current, self.current_made = None, False  # all out: a cancel from here on has nothing to stop
                await self._send_json(done)
        finally:
            ahead, self.ahead = self.ahead, None
            await _discard(ahead)  # closing, failed or stopped: the next one is never spoken

    async def _ready(self, utterance: Utterance, *, ahead: bool = False, count_rate: bool = True
                     ) -> tuple[SynthesisSession, bytes]:
        """An utterance's checks, its job and its first audio. Cancelled, it gives back what it took."""
        admit = asyncio.ensure_future(
            database_sync_to_async(_admit)(self.api_key, utterance, ahead=ahead, count_rate=count_rate)
        )
        try:
            session = await asyncio.shield(admit)
        except asyncio.CancelledError:
            # A thread cannot be interrupted: let the checks finish, then give back the stream slot they took.
            await asyncio.wait([admit])
            if not admit.cancelled() and admit.exception() is None:
                await admit.result().abandon()
            raise
        try:
            return session, await session.start()
        except BaseException:  # cancelled (start() ends the session itself when the job fails)
            await session.abandon()
            raise

    async def _speak(self, utterance: Utterance, ready: asyncio.Task | None) -> dict:
        """One utterance, from its checks (or the job started ahead of its turn) to its last audio frame;
        returns the done frame."""
        if ready is None:
            session, first = await self._ready(utterance)
        else:
            try:
                session, first = await ready
            except _NoRoomAhead:
                session, first = await self._ready(utterance, count_rate=False)
        session.attach_delivery(self.scope.get("callwaiting.delivery"))
        try:
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
        made = asyncio.create_task(self._when_made(session))
        try:
            async with aclosing(session.stream_body(first)) as body:
                async for chunk in body:
                    if chunk:
                        await self.send(bytes_data=chunk)
        finally:
            made.cancel()
        return {
            "type": "done", "request_id": str(session.request_id), "characters": session.characters,
            "audio_seconds": round(session.audio_seconds, 4),
        }

    async def _cancel(self) -> None:
        stopped = await self._stop()
        if stopped is not None:
            await self._send_json({"type": "cancelled", "request_id": str(stopped.request_id)})

    async def _stop(self) -> Utterance | None:
        """Drop the buffered text, the queued utterances and the one started ahead, and stop the one in
        flight; returns that one, if any."""
        self.text.clear()
        self.queue.clear()
        ahead, self.ahead = self.ahead, None
        stopped = self.current
        if self.runner is not None:
            if stopped is not None:
                self.runner.cancel()
            await asyncio.wait([self.runner])  # no frame of the stopped utterance may follow
        await _discard(ahead)
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
