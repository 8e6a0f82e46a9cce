"""A synthesis request from validation to usage row: the one place that knows the whole lifecycle.

`prepare()` (sync: database, quota, concurrency) -> `start()` (async: dispatch, first audio) ->
`stream_wav()` / `stream_pcm()` / `collect()` (async: the rest) -> exactly one usage row and metrics.
"""
import collections
import logging
import threading
import time
import uuid
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections
from rest_framework import status

from callwaiting.errors import ApiError
from synthesis import audio, heartbeats, metrics
from synthesis.dispatch import DispatchError, JobSpec, WorkerStream
from synthesis.engines.base import primary_language
from synthesis.frontend import FrontendError, plain_text_segments, spoken_characters, ssml_segments
from tenants import selectors as tenant_selectors
from tenants import services as tenant_services
from tenants.models import ApiKey, UsageRecord
from voices.models import Voice
from voices.selectors import voice_get_for_tenant

logger = logging.getLogger(__name__)


def _voice_language(voice: Voice, requested: str) -> str:
    """The request's language if the voice speaks it; the voice's own when none was asked for."""
    if not requested:
        return voice.language
    if primary_language(requested) not in {primary_language(language) for language in voice.languages}:
        raise ApiError(
            "unsupported_language",
            f"Voice '{voice.voice_id}' speaks {', '.join(voice.languages)}, not '{requested}'.",
            status.HTTP_422_UNPROCESSABLE_ENTITY,
        )
    return requested


_SLOT_TTL_SECONDS = 3600


# Stream slots this process could not give back while Redis was unreachable, per counter key: given back with
# the tenant's next stream. A counter that is gone by then (it expired, or Redis restarted empty) owes nothing.
_unreleased: collections.Counter = collections.Counter()
_unreleased_lock = threading.Lock()


def _release_slots(key: str, count: int) -> None:
    try:
        cache.decr(key, count)
        cache.touch(key, _SLOT_TTL_SECONDS)
    except ValueError:
        pass  # the counter expired meanwhile; nothing left to give back
    except Exception:
        # Redis is down: the usage row still goes to the database; the slot is given back later.
        with _unreleased_lock:
            _unreleased[key] += count
        raise


def _release_owed_slots(key: str) -> None:
    with _unreleased_lock:
        owed = _unreleased.pop(key, 0)
    if owed:
        _release_slots(key, owed)


def _stream_slot_key(tenant_id: int) -> str:
    return f"tts:streams:{tenant_id}"


class SynthesisSession:
    def __init__(self, *, api_key: ApiKey, request_id: uuid.UUID | None = None):
        self.api_key = api_key
        self.tenant = api_key.tenant
        self.request_id = request_id or uuid.uuid4()
        self.started = time.perf_counter()
        self.voice_id = ""
        self.engine = ""
        self.language = ""
        self.characters = 0
        self.streaming = True
        self.audio_format = "wav"
        self.stream: WorkerStream | None = None
        self.first_audio_at: float | None = None
        self.pcm_bytes = 0
        self._slot_held = False
        self._closed = False

    # --- before any audio ---------------------------------------------------------------------------------
    def prepare(self, data: dict) -> None:
        """Validate the request against voice, language, engine, quota and concurrency. Raises ApiError."""
        self.voice_id, self.streaming, self.audio_format = data["voice_id"], data["streaming"], data["format"]
        try:
            if data["ssml"].strip():
                if len(data["ssml"]) > 4 * settings.TTS_MAX_TEXT_CHARS:
                    raise ApiError("text_too_long", "SSML markup is too long.", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
                segments = ssml_segments(data["ssml"], speed=data["speed"])
            else:
                segments = plain_text_segments(data["text"], speed=data["speed"])
        except FrontendError as exc:
            raise ApiError(exc.code, exc.message) from None
        self.characters = spoken_characters(segments)
        if self.characters == 0:
            raise ApiError("empty_text", "Nothing to say: text (or the text inside ssml) is empty.")
        if self.characters > settings.TTS_MAX_TEXT_CHARS:
            raise ApiError(
                "text_too_long",
                f"Text has {self.characters} characters; the limit is {settings.TTS_MAX_TEXT_CHARS}.",
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        voice = voice_get_for_tenant(tenant=self.tenant, voice_id=self.voice_id)
        if voice is None:
            raise ApiError("voice_not_found", f"No voice '{self.voice_id}' for this tenant.", status.HTTP_404_NOT_FOUND)
        if voice.status == Voice.Status.UNAVAILABLE:
            raise ApiError("voice_unavailable", f"Voice '{voice.voice_id}' is unavailable: {voice.status_reason}", 503)
        if voice.status != Voice.Status.READY:
            reason = f": {voice.status_reason}" if voice.status_reason else ""
            raise ApiError("voice_not_ready", f"Voice '{voice.voice_id}' is {voice.status}{reason}", status.HTTP_409_CONFLICT)
        self.engine = voice.engine
        self.language = _voice_language(voice, data["language"])
        engine_state = heartbeats.engine_availability().get(voice.engine)
        if not engine_state or not engine_state["available"]:
            raise heartbeats.engine_unavailable_error(
                voice.engine, engine_state, f"Voice '{voice.voice_id}' cannot be served now"
            )
        self._check_quota()
        self._take_stream_slot()
        self.stream = WorkerStream(
            JobSpec(engine=voice.engine, language=self.language, voice_settings=voice.engine_settings, segments=segments)
        )

    def _check_quota(self) -> None:
        quota = self.tenant.monthly_character_quota
        if quota is None:
            return
        used = tenant_selectors.tenant_characters_this_month(tenant=self.tenant)
        if used + self.characters > quota:
            raise ApiError(
                "quota_exceeded",
                f"Monthly character quota of {quota} reached ({used} used; this request needs {self.characters}).",
                status.HTTP_402_PAYMENT_REQUIRED,
            )

    def _take_stream_slot(self) -> None:
        key = _stream_slot_key(self.tenant.pk)
        # One cache round trip in the usual case (this is on the way to the first audio): the counter is made
        # on first use, and its expiry is pushed back when a stream ends (close), so it lapses only after an
        # hour without any stream starting or ending, which heals slots leaked by a crashed process.
        try:
            if _unreleased:  # slots this process could not give back during a Redis outage
                _release_owed_slots(key)
            streams = cache.incr(key)
        except ValueError:
            with _unreleased_lock:
                _unreleased.pop(key, None)  # a new counter: nothing is owed to it
            cache.add(key, 0, timeout=_SLOT_TTL_SECONDS)
            streams = cache.incr(key)
        if streams > self.tenant.max_concurrent_streams:
            cache.decr(key)
            raise ApiError(
                "too_many_streams",
                f"This tenant already has {self.tenant.max_concurrent_streams} streams in flight.",
                status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": "1"},
            )
        self._slot_held = True
        metrics.ACTIVE_STREAMS.labels(self.engine).inc()

    async def start(self) -> bytes:
        """Dispatch to a worker and wait for the first audio, so errors still get a proper status code."""
        try:
            first = await self.stream.start()
        except DispatchError as exc:
            await sync_to_async(self.close)(UsageRecord.Status.ERROR, exc.code)
            raise exc.api_error() from None
        self._audio(first)
        return first

    @property
    def sample_rate(self) -> int:
        return self.stream.sample_rate

    def _audio(self, chunk: bytes) -> None:
        if self.first_audio_at is None and chunk:
            self.first_audio_at = time.perf_counter()
        self.pcm_bytes += len(chunk)

    # --- the audio ------------------------------------------------------------------------------------------
    async def stream_body(self, first: bytes) -> AsyncIterator[bytes]:
        """The response body, sent while it is synthesized. A worker failure mid-stream ends the transfer
        abruptly (never a short file that looks complete); a client that goes away cancels the job."""
        outcome, code = UsageRecord.Status.CLIENT_DISCONNECTED, "client_disconnected"
        try:
            prefix = audio.wav_header(sample_rate=self.sample_rate) if self.audio_format == "wav" else b""
            yield prefix + first
            async for chunk in self.stream.chunks():
                self._audio(chunk)
                yield chunk
            if self.stream.complete:  # else it was cancelled under us: the client is gone
                outcome, code = UsageRecord.Status.SUCCESS, ""
        except DispatchError as exc:
            outcome, code = UsageRecord.Status.ERROR, exc.code
            raise
        finally:
            if outcome == UsageRecord.Status.CLIENT_DISCONNECTED:
                await self.abandon()
            else:
                await sync_to_async(self._close_and_release)(outcome, code)  # may end outside the request cycle

    async def abandon(self) -> None:
        """The client is gone before the audio was all out: cancel the job, bill what was sent. A no-op once
        the request was closed (in particular after a complete stream)."""
        if self._closed:
            return
        await self.stream.cancel()
        await sync_to_async(self._close_and_release)(UsageRecord.Status.CLIENT_DISCONNECTED, "client_disconnected")

    def _close_and_release(self, outcome: str, error_code: str) -> None:
        """close(), then hand the database connection back: an abandoned exchange may end outside Django's
        request cycle (RequestCleanupMiddleware), where nothing else would."""
        try:
            self.close(outcome, error_code)
        finally:
            close_old_connections()

    async def collect(self, first: bytes) -> bytes:
        """The whole clip, for streaming=false."""
        parts = [first]
        try:
            async for chunk in self.stream.chunks():
                self._audio(chunk)
                parts.append(chunk)
        except DispatchError as exc:
            await sync_to_async(self.close)(UsageRecord.Status.ERROR, exc.code)
            raise exc.api_error() from None
        await sync_to_async(self.close)(UsageRecord.Status.SUCCESS, "")
        pcm = b"".join(parts)
        return audio.wav_file(pcm, sample_rate=self.sample_rate) if self.audio_format == "wav" else pcm

    # --- the end --------------------------------------------------------------------------------------------
    def close(self, outcome: str, error_code: str = "") -> None:
        """Release the stream slot, count metrics and write the usage row; once per request."""
        if self._closed:
            return
        self._closed = True
        if self._slot_held:
            try:
                _release_slots(_stream_slot_key(self.tenant.pk), 1)
            except Exception as exc:  # Redis is down: owed, and given back with the tenant's next stream
                logger.warning("request %s: could not release its stream slot now (%s)", self.request_id, exc)
            metrics.ACTIVE_STREAMS.labels(self.engine).dec()
        total = time.perf_counter() - self.started
        ttfa = self.first_audio_at - self.started if self.first_audio_at else None
        seconds = audio.pcm_seconds(self.pcm_bytes, self.stream.sample_rate if self.stream else 0)
        engine = self.engine or "none"
        metrics.REQUESTS.labels(engine, outcome).inc()
        if outcome == UsageRecord.Status.ERROR:
            metrics.ERRORS.labels(engine, error_code).inc()
        else:
            metrics.CHARACTERS.labels(engine).inc(self.characters)
            metrics.AUDIO_SECONDS.labels(engine).inc(seconds)
            metrics.REQUEST_DURATION.labels(engine).observe(total)
            if ttfa is not None:
                metrics.TIME_TO_FIRST_AUDIO.labels(engine).observe(ttfa)
        tenant_services.usage_record(
            request_id=self.request_id,
            tenant_id=self.tenant.pk,
            api_key_id=self.api_key.pk,
            voice_id=self.voice_id,
            engine=self.engine,
            language=self.language,
            characters=self.characters,
            audio_seconds=round(seconds, 4),
            time_to_first_audio_ms=round(ttfa * 1000, 2) if ttfa is not None else None,
            total_ms=round(total * 1000, 2),
            status=outcome,
            error_code=error_code,
        )
