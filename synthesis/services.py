"""A synthesis request from validation to usage row: the one place that knows the whole lifecycle.

`prepare()` (sync: database, quota, concurrency) -> `start()` (async: dispatch, first audio) ->
`stream_body()` / `collect()` (async: the rest, encoded as the client asked, synthesis.encoders) -> exactly one usage row and metrics.
"""
import asyncio
import collections
import hashlib
import json
import logging
import tempfile
import threading
import time
import uuid
from collections.abc import AsyncIterator

from asgiref.sync import sync_to_async
from django.conf import settings
from django.core.cache import cache
from django.db import close_old_connections, connection
from rest_framework import status

from callwaiting.errors import ApiError, is_database_error
from synthesis import audio, heartbeats, metrics, phrase_cache
from synthesis.encoders import Encoder
from synthesis.dispatch import DispatchError, JobSpec, WorkerStream
from synthesis.engines.base import primary_language
from synthesis.frontend import Pause, plain_text_segments, spoken_characters, ssml_segments
from tenants import selectors as tenant_selectors
from tenants import services as tenant_services
from tenants.models import ApiKey, UsageRecord
from voices.models import Voice
from voices.selectors import voice_get_for_synthesis

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
_IN_FLIGHT_TTL_SECONDS = 900  # a request id's claim outlives any request; a crashed process's claim lapses


# Counts this process could not give back while Redis was unreachable, per counter key: given back with the
# key's next use. A counter that is gone by then (it expired, or Redis restarted empty) owes nothing.
_unreleased: collections.Counter = collections.Counter()
_unreleased_lock = threading.Lock()


def _stream_slot_key(tenant_id: int) -> str:
    return f"tts:streams:{tenant_id}"


def _counter_incr(key: str) -> int:
    """Counters of streams in flight live in the cache (Redis in production, shared by every web process).
    One round trip in the usual case: made on first use, and their expiry is pushed back as streams end
    (_counter_decr), so they lapse only after an hour without any change, which heals counts leaked by a
    crashed process."""
    if _unreleased:
        with _unreleased_lock:
            owed = _unreleased.pop(key, 0)
        if owed:
            _counter_decr(key, owed)
    try:
        return cache.incr(key)
    except ValueError:
        with _unreleased_lock:
            _unreleased.pop(key, None)  # a new counter: nothing is owed to it
        cache.add(key, 0, timeout=_SLOT_TTL_SECONDS)
        return cache.incr(key)


def _counter_decr(key: str, count: int = 1) -> int | None:
    """Give back `count`; None when there was nothing to give back to, or Redis is down (then it is owed, and
    the usage row is written all the same)."""
    try:
        left = cache.decr(key, count)
        cache.touch(key, _SLOT_TTL_SECONDS)
        return left
    except ValueError:
        return None  # expired meanwhile; nothing left to give back
    except Exception as exc:
        with _unreleased_lock:
            _unreleased[key] += count
        logger.warning("could not give back %s now (%s); it is owed", key, exc)
        return None


class _EngineShare:
    """A tenant's share of an engine's worker capacity (the live workers' slots for it), so that one tenant's
    burst cannot take the service from the others. While there is room anyone may go past their share; once
    the engine is nearly full (all but a reserve of 1 slot in 8, from 8 slots up), a tenant above capacity / (tenants with
    streams on it) is refused with 429 until its streams end, and the reserve lets a newcomer start at once."""

    def __init__(self, tenant_id: int, engine: str):
        self.tenant_key = f"tts:streams:{tenant_id}:{engine}"
        self.total_key = f"tts:streams:engine:{engine}"
        self.tenants_key = f"tts:stream-tenants:{engine}"
        self.held = False

    def take(self, capacity: int) -> tuple[int, int] | None:
        """Count this stream in; None if admitted, else (streams the tenant has, its share)."""
        mine = _counter_incr(self.tenant_key)
        if mine == 1:
            _counter_incr(self.tenants_key)
        total = _counter_incr(self.total_key)
        self.held = True
        reserve = capacity // 8  # none below 8 slots: there a tenant alone may use them all
        if total <= capacity - reserve:
            return None
        tenants = cache.get(self.tenants_key) or 1
        if tenants < 2:
            return None  # alone on the engine: its streams past the slots wait for a free one, as ever
        share = max(1, (capacity - reserve) // tenants)
        if mine <= share:
            return None
        self.release()
        return mine - 1, share

    def release(self) -> None:
        if not self.held:
            return
        self.held = False
        if _counter_decr(self.tenant_key) == 0:
            _counter_decr(self.tenants_key)
        _counter_decr(self.total_key)


def parse_request_id(raw, field: str) -> uuid.UUID | None:
    """The client's own id for a request (None when it sent none), for billing a retry once."""
    if raw is None or raw == "":
        return None
    try:
        return uuid.UUID(str(raw))
    except ValueError:
        raise ApiError("invalid_request_id", f"{field} must be a UUID.") from None


def request_fingerprint(data: dict) -> str:
    """What a request asks for (all but how it is delivered, and whether from the phrase cache): a reused
    request id must ask the same."""
    asked = {name: value for name, value in data.items() if name not in ("streaming", "cache")}
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()


class SynthesisSession:
    def __init__(self, *, api_key: ApiKey | None = None, tenant=None, request_id: uuid.UUID | None = None,
                 named_by_client: bool | None = None):
        # A request with a key is billed to the key's tenant; one from the portal (tenants/portal/audio.py) has
        # no key, only the tenant of the staff member who made it, and its usage row names no key.
        self.api_key = api_key
        self.tenant = api_key.tenant if api_key is not None else tenant
        if self.tenant is None:
            raise ValueError("SynthesisSession needs an api_key or a tenant")
        # The client named it (a retry must be billed once), unless the caller says the id was made for it.
        self.client_request_id = request_id is not None if named_by_client is None else named_by_client
        self.request_id = request_id or uuid.uuid4()
        self.fingerprint = ""
        self._record_usage = True
        self._in_flight_claimed = False
        self.started = time.perf_counter()
        self.voice_id = ""
        self.engine = ""
        self.language = ""
        self.characters = 0
        self.streaming = True
        self.audio_format = "wav"
        self.requested_sample_rate: int | None = None  # None: the format's default (see synthesis.encoders)
        self.stream: WorkerStream | None = None
        self.encoder: Encoder | None = None  # made once the engine's sample rate is known (start)
        self.phrase: phrase_cache.Phrase | None = None  # the request asked for the phrase cache
        self.first_audio_at: float | None = None
        self.pcm_bytes = 0  # audio made for this request
        self.delivery = None  # callwaiting.middleware.Delivery under daphne: what reached the client
        self._sent_before = 0
        self.body_started = False  # stream_body() began: audio went (or was going) to the client
        self._slot_held = False
        self._closed = False

    # --- before any audio ---------------------------------------------------------------------------------
    def prepare(self, data: dict) -> None:
        """Validate the request against voice, language, engine, quota and concurrency. Raises ApiError."""
        self.voice_id, self.streaming, self.audio_format = data["voice_id"], data["streaming"], data["format"]
        self.requested_sample_rate = data.get("sample_rate")
        self.fingerprint = request_fingerprint(data)
        if data["ssml"].strip():
            if len(data["ssml"]) > 4 * settings.TTS_MAX_TEXT_CHARS:
                raise ApiError("text_too_long", "SSML markup is too long.", status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
            segments = ssml_segments(data["ssml"], speed=data["speed"])
        else:
            segments = plain_text_segments(data["text"], speed=data["speed"])
        self.characters = spoken_characters(segments)
        pause_seconds = sum(s.milliseconds for s in segments if isinstance(s, Pause)) / 1000
        if pause_seconds > settings.TTS_MAX_AUDIO_SECONDS:
            raise ApiError(
                "audio_too_long",
                f"The pauses alone make {pause_seconds:g} s of audio; a request may make at most "
                f"{settings.TTS_MAX_AUDIO_SECONDS:g} s (TTS_MAX_AUDIO_SECONDS).",
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        if self.characters == 0:
            raise ApiError("empty_text", "Nothing to say: text (or the text inside ssml) is empty.")
        if self.characters > settings.TTS_MAX_TEXT_CHARS:
            raise ApiError(
                "text_too_long",
                f"Text has {self.characters} characters; the limit is {settings.TTS_MAX_TEXT_CHARS}.",
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )
        # Nothing is admitted that could not be billed: its stream would end only once its usage row is written.
        # The key and voice may come from memory (callwaiting.lookup_cache), so reach the database here: while it
        # is down this raises, and the request is refused with 503 before any audio.
        connection.ensure_connection()
        voice = voice_get_for_synthesis(tenant=self.tenant, voice_id=self.voice_id)
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
        if phrase_cache.wanted(asked=data.get("cache"), tenant=self.tenant, characters=self.characters):
            self.phrase = phrase_cache.Phrase.lookup(
                tenant=self.tenant, voice=voice, engine_version=engine_state.get("version", ""),
                language=self.language, segments=segments,
            )
        already_billed = self._claim_request_id()
        free_hit = self.cached and not self.tenant.phrase_cache_billed  # counts against no quota
        if not already_billed and not free_hit:
            self._check_quota()
        self._take_stream_slot(capacity=engine_state.get("capacity", 0))
        self.stream = WorkerStream(
            JobSpec(engine=voice.engine, language=self.language, voice_settings=voice.engine_settings, segments=segments)
        )
        if self.phrase is not None:
            self.stream = self.phrase.stream(self.stream)  # the cached clip, or the job recorded for the cache

    @property
    def cached(self) -> bool:
        """Served from the phrase cache: no model worker runs for this request."""
        return self.phrase is not None and self.phrase.hit

    def _claim_request_id(self) -> bool:
        """For an id the client chose: refuse its reuse for another request, a duplicate in flight, and a retry
        past TTS_REQUEST_MAX_ATTEMPTS; True when this retries a request that was billed already."""
        if not self.client_request_id:
            return False
        previous = tenant_selectors.usage_get_by_request_id(tenant=self.tenant, request_id=self.request_id)
        refusal = None
        if previous is not None and previous.request_fingerprint and previous.request_fingerprint != self.fingerprint:
            refusal = ("request_id_conflict", f"Request id {self.request_id} was used for a different request; "
                       "a retry must send the same request, anything else a new id.")
        elif previous is not None and previous.attempts >= settings.TTS_REQUEST_MAX_ATTEMPTS:
            # A retry is served again and billed once; past a few tries that would be free audio.
            refusal = ("too_many_attempts", f"Request {self.request_id} was tried {previous.attempts} times, "
                       "the most a request id may be; send a new id.")
        elif not cache.add(self._in_flight_key, 1, timeout=_IN_FLIGHT_TTL_SECONDS):
            refusal = ("request_in_progress", f"Request {self.request_id} is being served already.")
        if refusal is not None:
            self._record_usage = False  # the id names another request's row: leave it alone
            raise ApiError(*refusal, status.HTTP_409_CONFLICT)
        self._in_flight_claimed = True
        return previous is not None and previous.status != UsageRecord.Status.ERROR

    @property
    def _in_flight_key(self) -> str:
        return f"tts:request:{self.tenant.pk}:{self.request_id}"

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

    def _take_stream_slot(self, *, capacity: int) -> None:
        if _counter_incr(_stream_slot_key(self.tenant.pk)) > self.tenant.max_concurrent_streams:
            _counter_decr(_stream_slot_key(self.tenant.pk))
            raise ApiError(
                "too_many_streams",
                f"This tenant already has {self.tenant.max_concurrent_streams} streams in flight.",
                status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": "1"},
            )
        self._share = _EngineShare(self.tenant.pk, self.engine)
        # A phrase-cache hit takes no worker capacity: it is never refused as the engine's being busy.
        over_share = None if self.cached else self._share.take(capacity)
        if over_share is not None:
            _counter_decr(_stream_slot_key(self.tenant.pk))
            streams, share = over_share
            raise ApiError(
                "too_many_streams",
                f"The {self.engine!r} engine is busy: this tenant has {streams} of its {capacity} streams, more "
                f"than its fair share of {share} while other tenants use it; retry when a stream ends.",
                status.HTTP_429_TOO_MANY_REQUESTS,
                headers={"Retry-After": "2"},
            )
        self._slot_held = True
        metrics.ACTIVE_STREAMS.labels(self.engine).inc()

    async def start(self) -> bytes:
        """Dispatch to a worker and wait for the first audio, so errors still get a proper status code."""
        try:
            first = await self.stream.start()
            self.encoder = Encoder(self.audio_format, source_rate=self.source_rate, sample_rate=self.requested_sample_rate)
            self._audio(first)
        except DispatchError as exc:
            await self.stream.cancel()  # a no-op when dispatch failed; stops the job when we cut the audio
            await self.end(UsageRecord.Status.ERROR, exc.code)
            raise
        return first

    @property
    def sample_rate(self) -> int:
        """The rate of the audio the client gets."""
        return self.encoder.sample_rate if self.encoder else self.source_rate

    @property
    def source_rate(self) -> int:
        """The engine's rate: what usage and limits count in."""
        return self.stream.sample_rate if self.stream else 0

    @property
    def audio_seconds(self) -> float:
        return audio.pcm_seconds(self.pcm_bytes, self.source_rate)

    @property
    def content_type(self) -> str:
        return self.encoder.content_type

    def _audio(self, chunk: bytes) -> None:
        if self.first_audio_at is None and chunk:
            self.first_audio_at = time.perf_counter()
        self.pcm_bytes += len(chunk)
        if self.audio_seconds > settings.TTS_MAX_AUDIO_SECONDS:
            # Speech longer than the pauses let us foresee (very slow prosody): cut it, as a failure.
            raise DispatchError(
                "audio_too_long",
                f"The request made more than {settings.TTS_MAX_AUDIO_SECONDS:g} s of audio (TTS_MAX_AUDIO_SECONDS).",
                status.HTTP_413_REQUEST_ENTITY_TOO_LARGE,
            )

    # --- the audio ------------------------------------------------------------------------------------------
    async def stream_body(self, first: bytes) -> AsyncIterator[bytes]:
        """The response body, sent while it is synthesized. A worker failure mid-stream ends the transfer
        abruptly (never a short file that looks complete); a client that goes away cancels the job."""
        outcome, code = UsageRecord.Status.CLIENT_DISCONNECTED, "client_disconnected"
        self.body_started = True
        try:
            # An encoder may hold a chunk's samples for its next frame: nothing to send then (an empty chunk
            # would end a chunked HTTP body).
            if encoded := self.encoder.encode(first):
                yield encoded
            async for chunk in self.stream.chunks():
                self._audio(chunk)
                if encoded := self.encoder.encode(chunk):
                    yield encoded
            if self.stream.complete and (tail := self.encoder.finish()):
                yield tail
            # All made and handed over (else it was cancelled under us: the client is gone); a success once the
            # client has received it, which can take a while: the socket's buffers hold megabytes.
            if self.stream.complete and (
                self.delivery is None or await self.delivery.received(settings.TTS_CLIENT_STALL_TIMEOUT)
            ):
                outcome, code = UsageRecord.Status.SUCCESS, ""
        except DispatchError as exc:
            outcome, code = UsageRecord.Status.ERROR, exc.code
            await self.stream.cancel()  # a no-op when the worker failed; stops it when we cut the audio
            raise
        finally:
            if outcome == UsageRecord.Status.CLIENT_DISCONNECTED:
                await self.abandon()
            else:
                await self.end(outcome, code)

    def attach_delivery(self, delivery) -> None:
        """What of the connection's output reached the client (callwaiting.middleware.Delivery), from here on."""
        self.delivery = delivery
        self._sent_before = delivery.sent if delivery is not None else 0

    async def abandon(self) -> None:
        """The client is gone before the audio was all out: cancel the job, bill what was sent. A no-op once
        the request was closed (in particular after a complete stream)."""
        if self._closed:
            return
        await self.stream.cancel()
        if self.delivery is not None:
            self.delivery.observe()  # the last word on what the client received
        await self.end(UsageRecord.Status.CLIENT_DISCONNECTED, "client_disconnected")

    async def end(self, outcome: str, error_code: str = "") -> None:
        """close() from the event loop, shielded, so that an exchange cancelled or killed meanwhile (daphne kills
        an app still running 10 s after its client left) still writes its usage row."""
        await asyncio.shield(sync_to_async(self._close_and_release)(outcome, error_code))

    def refuse(self, code: str) -> None:
        """close() for a request refused before any audio, from the thread that checked it. While the database is
        down (the likely cause of the refusal) its error row cannot be written: the refusal stands without it."""
        try:
            self.close(UsageRecord.Status.ERROR, code)
        except Exception as exc:
            if not is_database_error(exc):
                raise
            logger.warning("request %s refused (%s); its usage row not written, the database cannot be reached (%s)",
                           self.request_id, code, exc)

    def withdraw(self) -> None:
        """Give back what prepare() took, with no usage row and no metrics: for a refusal that is not final, as
        when the WebSocket API admits the next utterance ahead of its turn and finds the tenant's streams all
        in use (by the one being spoken): it is admitted again at its turn."""
        if self._closed:
            return
        self._closed = True
        self._release()

    def _release(self) -> None:
        """The request id's claim and the stream slot, given back."""
        if self._in_flight_claimed:
            try:
                cache.delete(self._in_flight_key)
            except Exception as exc:  # Redis is down: the claim lapses by itself; the row is written all the same
                logger.warning("request %s: could not release its request id now (%s)", self.request_id, exc)
        if self._slot_held:
            _counter_decr(_stream_slot_key(self.tenant.pk))
            self._share.release()
            metrics.ACTIVE_STREAMS.labels(self.engine).dec()

    def _close_and_release(self, outcome: str, error_code: str) -> None:
        """close(), then hand the database connection back: an abandoned exchange may end outside Django's
        request cycle (RequestCleanupMiddleware), where nothing else would."""
        try:
            self.close(outcome, error_code, retry_for=settings.TTS_USAGE_WRITE_RETRY_SECONDS)
        finally:
            close_old_connections()

    async def collect(self, first: bytes):
        """The whole clip, for streaming=false: a file positioned at its start, in memory while small and on
        disk past TTS_RESPONSE_MEMORY_BYTES, so a long clip does not sit in the web process's memory."""
        body = tempfile.SpooledTemporaryFile(max_size=settings.TTS_RESPONSE_MEMORY_BYTES)
        try:
            body.write(self.encoder.encode(first))  # start() has counted it
            async for chunk in self.stream.chunks():
                self._audio(chunk)
                body.write(self.encoder.encode(chunk))
            body.write(self.encoder.finish())
        except DispatchError as exc:
            body.close()
            await self.stream.cancel()
            await self.end(UsageRecord.Status.ERROR, exc.code)
            raise
        except BaseException:
            body.close()
            raise
        await self.end(UsageRecord.Status.SUCCESS, "")
        if self.audio_format == "wav":  # the whole clip is known now: a header with its sizes
            body.seek(0)
            header = audio.wav_header(sample_rate=self.sample_rate, data_bytes=self.encoder.output_bytes - audio.WAV_HEADER_BYTES)
            body.write(header)
        body.seek(0)
        return body

    # --- the end --------------------------------------------------------------------------------------------
    def _billed_pcm_bytes(self, outcome: str) -> int:
        """The audio the usage row records: what the client received when it went away (as far as the server
        can tell), else what was made; nothing when none of it was on its way (an utterance made ahead of its
        turn on the WebSocket API and dropped by a cancel)."""
        if outcome == UsageRecord.Status.CLIENT_DISCONNECTED and not self.body_started:
            return 0
        if outcome != UsageRecord.Status.CLIENT_DISCONNECTED or self.delivery is None or self.encoder is None:
            return self.pcm_bytes
        received = self.encoder.source_bytes_received(max(0, self.delivery.delivered - self._sent_before))
        return min(received, self.pcm_bytes)

    def close(self, outcome: str, error_code: str = "", retry_for: float = 0) -> None:
        """Release the stream slot, count metrics and write the usage row; once per request. A row that cannot be
        written because the database is unreachable is tried again for `retry_for` seconds (see _write_usage)."""
        if self._closed:
            return
        self._closed = True
        self._release()
        total = time.perf_counter() - self.started
        ttfa = self.first_audio_at - self.started if self.first_audio_at else None
        seconds = audio.pcm_seconds(self._billed_pcm_bytes(outcome), self.source_rate)
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
        if outcome == UsageRecord.Status.SUCCESS and self.phrase is not None and not self.phrase.hit:
            self.phrase.remember(self.stream)
        if not self._record_usage:
            return
        self._write_usage(
            retry_for,
            request_id=self.request_id,
            request_fingerprint=self.fingerprint,
            tenant_id=self.tenant.pk,
            api_key_id=self.api_key.pk if self.api_key is not None else None,
            voice_id=self.voice_id,
            engine=self.engine,
            language=self.language,
            characters=self.characters,
            audio_seconds=round(seconds, 4),
            time_to_first_audio_ms=round(ttfa * 1000, 2) if ttfa is not None else None,
            total_ms=round(total * 1000, 2),
            status=outcome,
            error_code=error_code,
            cached=self.cached,
        )

    def _write_usage(self, retry_for: float, **row) -> None:
        """The usage row, written while the database is down (a restart, a failover) as soon as it is back, within
        `retry_for` seconds: each try waits up to the pool's timeout for a connection, one from before the restart
        fails at once and is dropped. Past that the error is raised (the response is cut, never completed
        without its row) and the row is logged, to be billed from the log."""
        deadline = time.monotonic() + retry_for
        while True:
            try:
                tenant_services.usage_record(**row)
                return
            except Exception as exc:
                if not is_database_error(exc):
                    raise
                connection.close()  # a connection broken by the outage is not reused
                if time.monotonic() >= deadline:
                    logger.error("request %s: usage row not written, the database cannot be reached (%s): %r",
                                 self.request_id, exc, row)
                    raise
                logger.warning("request %s: usage row not written yet, the database cannot be reached (%s)",
                               self.request_id, exc)
                time.sleep(0.2)  # a short pause between tries; the pool's own wait is the long one
