"""Twilio Media Streams bridge: the protocol's messages, the playout pacing, and the registry of live streams.

A `<Connect><Stream url="wss://.../v1/twilio">` call opens a bidirectional Media Stream to
synthesis.consumers.TwilioMediaStreamConsumer. Twilio sends `connected`, `start` (with the TwiML's <Parameter>s in
start.customParameters), the caller's audio as `media`, `dtmf`, `mark` (echoed when playback reached a mark we
sent) and `stop`; we send `media` (base64 8 kHz mu-law), `mark` and `clear`. Message shapes follow
https://www.twilio.com/docs/voice/media-streams/websocket-messages; tests/synthesis/twilio_messages/ holds
recorded examples that the tests replay.

While a call is up, the integrator's app speaks into it (and barges in) through REST; those requests may land
on any web process, so they reach the consumer serving the call through the channel layer (a group per
stream: in-memory in the embedded mode, channels_redis in production).
"""
import asyncio
import base64
import collections
import json
import logging
import re
import time
import uuid
from contextlib import aclosing

from asgiref.sync import ThreadSensitiveContext, async_to_sync, sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.cache import cache
from rest_framework import exceptions

from callwaiting.errors import ApiError, ClientGone, as_api_error, error_code
from synthesis.consumers import CLOSE_CODE_BASE, MAX_QUEUED, Utterance, _admit, _authenticate
from synthesis.serializers import TwilioSpeakSerializer
from synthesis.services import SynthesisSession
from tenants.models import ApiKey, UsageRecord

logger = logging.getLogger(__name__)

SAMPLE_RATE = 8000  # Twilio's media streams carry 8 kHz mono mu-law, one byte a sample, both ways
FRAME_BYTES = 160  # 20 ms: the size of the frames Twilio itself sends
FRAME_SECONDS = FRAME_BYTES / SAMPLE_RATE
MULAW_SILENCE = b"\xff"  # mu-law's code for 0: pads an utterance's last frame to a whole 20 ms

# Twilio's stream SIDs are "MZ" + 32 hex digits; anything of letters and digits is accepted (fixtures, other
# carriers speaking the same protocol), as it must also be a valid channel-layer group name.
STREAM_SID = re.compile(r"^[A-Za-z0-9]{1,64}$")
SID_PATTERN = r"[A-Za-z0-9]{1,64}"  # in the REST paths: a streamSid or a CallSid

# A live stream's owner is kept in the cache (Redis in production: every web process sees it) for as long as a
# call can last: Twilio ends calls after 4 hours (the most `timeLimit` allows); the bridge forgets it at hang-up.
_LIVE_STREAM_TTL_SECONDS = 4 * 3600 + 600

# Twilio sends `start` right after connecting; a socket that has not named its stream (and key) by then is closed
# rather than held open unauthenticated.
START_TIMEOUT_SECONDS = 10.0

# The custom parameters (<Parameter name=... value=...>) the bridge reads from `start`.
KEY_PARAMETER = "api_key"
SPEECH_PARAMETERS = ("text", "ssml", "voice_id", "language", "speed")


# --- messages to Twilio ---------------------------------------------------------------------------------------
def media_message(stream_sid: str, mulaw: bytes) -> dict:
    return {"event": "media", "streamSid": stream_sid, "media": {"payload": base64.b64encode(mulaw).decode("ascii")}}


def mark_message(stream_sid: str, name: str) -> dict:
    return {"event": "mark", "streamSid": stream_sid, "mark": {"name": name}}


def clear_message(stream_sid: str) -> dict:
    return {"event": "clear", "streamSid": stream_sid}


# --- pacing ---------------------------------------------------------------------------------------------------
class MonotonicClock:
    """The wall clock the bridge paces audio by; tests give the consumer a fake one."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)


class Playout:
    """What Twilio holds of our audio, modelled from what was sent: Twilio plays what it receives in real time,
    so the audio sent so far ends playing at `buffered_until` (an idle gap lets the buffer drain). A frame is
    sent only while that stays within `lead` seconds of now: enough to ride out network jitter, and little
    enough that a `clear` (barge-in) silences the call at once and nothing minutes ahead is ever wasted.

    It is also the utterance's delivery record for billing (SynthesisSession.attach_delivery): an utterance cut
    off by a hang-up or a clear is billed for the audio the caller heard, i.e. sent less what Twilio still held
    (the buffer a `clear` or a hang-up throws away), not for what was synthesized."""

    def __init__(self, clock, lead_seconds: float):
        self.clock = clock
        self.lead = max(lead_seconds, FRAME_SECONDS)  # below one frame nothing could ever be sent
        self.buffered_until = clock.now()
        self.sent = 0  # mu-law bytes handed to Twilio
        self.delivered = 0

    def ahead(self) -> float:
        """Seconds of audio Twilio has not played yet."""
        return max(0.0, self.buffered_until - self.clock.now())

    async def wait_for_room(self, size: int) -> None:
        seconds = size / SAMPLE_RATE
        while (over := self.ahead() + seconds - self.lead) > 1e-9:
            await self.clock.sleep(over)

    def sent_frame(self, size: int) -> None:
        self.buffered_until = max(self.buffered_until, self.clock.now()) + size / SAMPLE_RATE
        self.sent += size

    def cleared(self) -> None:
        """Twilio dropped what it held (we sent `clear`)."""
        self.buffered_until = self.clock.now()

    # The Delivery interface SynthesisSession reads (callwaiting.middleware.Delivery).
    def observe(self) -> bool:
        """What was played by now: everything sent but the audio Twilio has not reached yet."""
        self.delivered = max(self.delivered, self.sent - round(self.ahead() * SAMPLE_RATE))
        return True

    async def received(self, timeout: float) -> bool:
        """An utterance sent in full is a success: Twilio plays what it was given unless told to clear it."""
        return True


# --- the live streams, and speaking into them from any web process ----------------------------------------------
# A live stream is found by its streamSid or by its call's CallSid (which the integrator's app knows first: it is in
# the webhook that returned the TwiML), both mapping to {"tenant_id", "stream_sid"}.
def _live_sid_key(sid: str) -> str:
    return f"tts:twilio:sid:{sid}"


def stream_group(stream_sid: str) -> str:
    return f"twilio.{stream_sid}"


def _sids(stream_sid: str, call_sid: str) -> list[str]:
    return [stream_sid] + ([call_sid] if call_sid and STREAM_SID.match(call_sid) else [])


def live_stream_register(*, stream_sid: str, call_sid: str, tenant_id: int) -> None:
    entry = {"tenant_id": tenant_id, "stream_sid": stream_sid}
    cache.set_many({_live_sid_key(sid): entry for sid in _sids(stream_sid, call_sid)}, timeout=_LIVE_STREAM_TTL_SECONDS)


def live_stream_forget(*, stream_sid: str, call_sid: str) -> None:
    for sid in _sids(stream_sid, call_sid):
        entry = cache.get(_live_sid_key(sid))
        if entry is not None and entry["stream_sid"] == stream_sid:  # a newer stream of the same call stays
            cache.delete(_live_sid_key(sid))


def live_stream_of_tenant(*, sid: str, tenant_id: int) -> str | None:
    """The streamSid of the call up now, named by its streamSid or CallSid, on a bridge authenticated by this
    tenant's key; None for anyone else's, or one that ended."""
    entry = cache.get(_live_sid_key(sid)) if STREAM_SID.match(sid) else None
    return entry["stream_sid"] if entry is not None and entry["tenant_id"] == tenant_id else None


def live_stream_speak(*, stream_sid: str, tenant_id: int, data: dict, request_id: uuid.UUID, named_by_client: bool) -> None:
    """Queue an utterance (validated TwilioSpeakSerializer data) on the call, wherever its bridge runs."""
    _group_send(stream_sid, {
        "type": "twilio.speak", "tenant_id": tenant_id, "data": data, "request_id": str(request_id),
        "named_by_client": named_by_client,
    })


def live_stream_clear(*, stream_sid: str, tenant_id: int) -> None:
    """Barge-in: the call's bridge stops the utterance in flight, drops the queued ones and clears Twilio's buffer."""
    _group_send(stream_sid, {"type": "twilio.clear", "tenant_id": tenant_id})


def _group_send(stream_sid: str, message: dict) -> None:
    async_to_sync(get_channel_layer().group_send)(stream_group(stream_sid), message)


live_stream_register_async = sync_to_async(live_stream_register)
live_stream_forget_async = sync_to_async(live_stream_forget)


# --- the bridge ----------------------------------------------------------------------------------------------
class TwilioMediaStreamConsumer(AsyncWebsocketConsumer):
    """`/v1/twilio`: a Twilio bidirectional Media Stream (`<Connect><Stream>`) that speaks into the call.

    The key comes as the `api_key` custom parameter of `start` (never in the URL) and is checked as on
    /v1/stream. Twilio cannot read error frames: a refused stream is logged (with this connection's id, its
    streamSid and CallSid, never the key) and closed with 4000 + the HTTP status. Utterances (the `text`
    parameter of `start`, then REST speak requests, which name the call by streamSid or CallSid, arriving over
    the channel layer) are served in order through SynthesisSession as 8 kHz
    mu-law, sent as 20 ms `media` messages paced to stay TTS_TWILIO_LEAD_SECONDS ahead of playback, each
    followed by a `mark` named after its request id. An utterance refused (quota, unknown voice...) is logged
    and billed as an error; the call goes on. A clear (REST) stops the audio at once and sends Twilio `clear`;
    `stop` or a dropped socket cancels everything, billed as client_disconnected. The caller's audio is
    accepted and ignored."""

    clock = MonotonicClock()  # tests put a fake one here

    async def __call__(self, scope, receive, send):
        async with ThreadSensitiveContext():  # as StreamConsumer: this connection's database work in its own thread
            return await super().__call__(scope, receive, send)

    async def connect(self):
        self.connection_id = uuid.uuid4()  # names this connection in the logs
        self.stream_sid: str | None = None
        self.call_sid = ""
        self.api_key: ApiKey | None = None
        self.authorization = ""
        self.queue: collections.deque[Utterance] = collections.deque()
        self.current: Utterance | None = None
        self.runner: asyncio.Task | None = None
        self.closing = False
        self.playout = Playout(self.clock, settings.TTS_TWILIO_LEAD_SECONDS)
        await self.accept()
        self.start_deadline = asyncio.create_task(self._close_unless_started())

    async def receive(self, text_data=None, bytes_data=None):
        if self.closing:
            return
        try:
            message = json.loads(text_data) if text_data is not None else None
        except (ValueError, RecursionError):
            message = None
        if not isinstance(message, dict):
            logger.warning("twilio connection %s: a frame that is not a JSON object; ignored", self.connection_id)
            return
        event = message.get("event")
        if event == "start":
            await self._start(message)
        elif event == "stop":
            await self._hang_up()
        elif event == "mark":
            logger.debug("twilio stream %s played up to mark %s", self.stream_sid, (message.get("mark") or {}).get("name"))
        # `connected`, the caller's `media` and `dtmf` (and any event Twilio adds later) need nothing from us.

    async def disconnect(self, code):
        self.start_deadline.cancel()
        await self._end()

    async def _close_unless_started(self) -> None:
        await asyncio.sleep(START_TIMEOUT_SECONDS)  # the event loop's clock: no audio is paced by it
        if self.stream_sid is None and not self.closing:
            logger.warning("twilio connection %s closed: no start message in %g s", self.connection_id,
                           START_TIMEOUT_SECONDS)
            self.closing = True
            await self.close(code=CLOSE_CODE_BASE + 408)

    # --- the call -------------------------------------------------------------------------------------------
    async def _start(self, message: dict) -> None:
        if self.stream_sid is not None:
            return  # Twilio sends `start` once; a repeat changes nothing
        self.start_deadline.cancel()
        start = message.get("start") if isinstance(message.get("start"), dict) else {}
        stream_sid = str(start.get("streamSid") or message.get("streamSid") or "")
        self.call_sid = str(start.get("callSid", ""))[:64]
        parameters = start.get("customParameters") if isinstance(start.get("customParameters"), dict) else {}
        key = str(parameters.get(KEY_PARAMETER, "")).strip()
        try:
            if not STREAM_SID.match(stream_sid):
                raise ApiError("malformed_request", "The start message has no valid streamSid.")
            self.authorization = f"Bearer {key}" if key else ""
            self.api_key = await database_sync_to_async(_authenticate)(self.authorization)
        except Exception as exc:
            error = as_api_error(exc)  # the database down: 4503, not a crash
            if not isinstance(error, exceptions.APIException):
                raise
            logger.warning("twilio connection %s (stream %r, call %r) refused: %s", self.connection_id,
                           stream_sid[:64], self.call_sid, error_code(error))
            self.closing = True
            await self.close(code=CLOSE_CODE_BASE + error.status_code)
            return
        self.stream_sid = stream_sid
        await self.channel_layer.group_add(stream_group(stream_sid), self.channel_name)
        await live_stream_register_async(stream_sid=stream_sid, call_sid=self.call_sid, tenant_id=self.api_key.tenant_id)
        logger.info("twilio connection %s: stream %s (call %s) up for tenant %s", self.connection_id, stream_sid,
                    self.call_sid, self.api_key.tenant_id)
        speech = {name: parameters[name] for name in SPEECH_PARAMETERS if name in parameters}
        if str(speech.get("text", "")).strip() or str(speech.get("ssml", "")).strip():
            await self._enqueue(speech, request_id=uuid.uuid4(), named_by_client=False)

    async def _hang_up(self) -> None:
        """Twilio's `stop`: the call is over."""
        await self._end()
        await self.close()

    async def _end(self) -> None:
        if self.closing and self.stream_sid is None:
            return
        self.closing = True
        await self._stop()
        if self.stream_sid is not None:
            stream_sid, self.stream_sid = self.stream_sid, None
            await self.channel_layer.group_discard(stream_group(stream_sid), self.channel_name)
            await live_stream_forget_async(stream_sid=stream_sid, call_sid=self.call_sid)

    # --- from the integrator's app, over the channel layer (live_stream_speak / live_stream_clear) ----------
    async def twilio_speak(self, event: dict) -> None:
        if self.closing or self.api_key is None or event.get("tenant_id") != self.api_key.tenant_id:
            return
        await self._enqueue(event["data"], request_id=uuid.UUID(event["request_id"]),
                            named_by_client=bool(event.get("named_by_client")))

    async def twilio_clear(self, event: dict) -> None:
        if self.closing or self.api_key is None or event.get("tenant_id") != self.api_key.tenant_id:
            return
        await self._stop()
        await self._send_json(clear_message(self.stream_sid))
        self.playout.cleared()

    # --- the queue ------------------------------------------------------------------------------------------
    async def _enqueue(self, fields: dict, *, request_id: uuid.UUID, named_by_client: bool) -> None:
        serializer = TwilioSpeakSerializer(data=fields)
        if not serializer.is_valid():
            refused = SynthesisSession(api_key=self.api_key, request_id=request_id, named_by_client=named_by_client)
            await refused.end(UsageRecord.Status.ERROR, "invalid_request")
            logger.warning("twilio stream %s: utterance %s refused, invalid fields: %s", self.stream_sid, request_id,
                           sorted(serializer.errors))
            return
        if len(self.queue) >= MAX_QUEUED:
            logger.warning("twilio stream %s: utterance %s dropped, %d already wait", self.stream_sid, request_id,
                           len(self.queue))
            return
        self.queue.append(Utterance(request_id=request_id, named_by_client=named_by_client,
                                    data=serializer.validated_data))
        if self.runner is None or self.runner.done():
            self.runner = asyncio.create_task(self._serve_queue())

    async def _serve_queue(self) -> None:
        while self.queue and not self.closing:
            self.current = self.queue.popleft()
            try:
                await self._speak(self.current)
            except ClientGone:
                self.closing = True
                return
            except exceptions.APIException as exc:  # refused or failed (billed already): the call goes on
                logger.warning("twilio stream %s: utterance %s failed: %s", self.stream_sid, self.current.request_id,
                               error_code(exc))
            except Exception:
                logger.exception("twilio stream %s: utterance %s failed", self.stream_sid, self.current.request_id)
            self.current = None

    async def _speak(self, utterance: Utterance) -> None:
        admit = asyncio.ensure_future(database_sync_to_async(_admit)(self.api_key, utterance))
        try:
            session = await asyncio.shield(admit)
        except asyncio.CancelledError:
            await asyncio.wait([admit])  # as StreamConsumer._speak: let the checks finish, give the slot back
            if not admit.cancelled() and admit.exception() is None:
                await admit.result().abandon()
            raise
        session.attach_delivery(self.playout)
        try:
            first = await session.start()
        except BaseException:
            await session.abandon()
            raise
        pending = bytearray()  # audio short of a whole 20 ms frame
        async with aclosing(session.stream_body(first)) as body:
            async for chunk in body:
                pending += chunk
                while len(pending) >= FRAME_BYTES:
                    await self._send_media(bytes(pending[:FRAME_BYTES]))
                    del pending[:FRAME_BYTES]
        if pending:
            await self._send_media(bytes(pending).ljust(FRAME_BYTES, MULAW_SILENCE))
        await self._send_json(mark_message(self.stream_sid, str(session.request_id)))

    async def _send_media(self, mulaw: bytes) -> None:
        await self.playout.wait_for_room(len(mulaw))
        await self._send_json(media_message(self.stream_sid, mulaw))
        self.playout.sent_frame(len(mulaw))

    async def _stop(self) -> None:
        """Drop the queued utterances and stop the one in flight (its job cancelled, billed for what was heard)."""
        self.queue.clear()
        if self.runner is None:
            return
        self.runner.cancel()
        await asyncio.wait([self.runner])  # no frame of the stopped utterance may follow
        self.current = None

    async def _send_json(self, frame: dict) -> None:
        await self.send(text_data=json.dumps(frame))
