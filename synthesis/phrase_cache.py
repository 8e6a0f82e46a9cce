"""Phrase cache: the engine's audio for a phrase kept, so that the next identical request ("please hold") is
served without a model worker, in about a millisecond.

What is kept is the engine's PCM with its chunking (before any format encoding: one entry serves every
output format), keyed by everything the audio depends on: the tenant (a hit is fast, so a shared entry would
tell one tenant what another said), the voice and its version (a changed or re-cloned voice never serves old
audio), the engine and its version, the language and the segments (text or SSML, speed and prosody).

The session (synthesis.services.SynthesisSession) gets the hit as a `CachedStream` and the miss as a
`RecordingStream`: both look like a synthesis.dispatch.WorkerStream. A recording is stored when its request
succeeded with the whole clip (never a cancelled, cut or failed stream), in one write, so no reader ever sees a
part of a clip. The store is bounded in bytes (least recently used out first) and entries expire after a TTL:
Redis when REDIS_URL is set (every web process shares it; each operation is one Lua script, atomic under
races), else this process's memory (the embedded mode, one process).
"""
import hashlib
import json
import logging
import struct
import threading
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass

from django.conf import settings

from synthesis import heartbeats, metrics, protocol

logger = logging.getLogger(__name__)

# The stored form of a clip: magic, sample rate, chunk count, each chunk's length, then the PCM.
_MAGIC = b"CWP1"
_HEADER = struct.Struct("<4sII")
CACHE_WORKER_ID = "phrase-cache"  # what X-Worker-Id and the WebSocket's "start" say for a hit


@dataclass(frozen=True)
class Clip:
    sample_rate: int
    chunks: tuple[bytes, ...]

    @property
    def pcm_bytes(self) -> int:
        return sum(len(chunk) for chunk in self.chunks)

    def encode(self) -> bytes:
        sizes = struct.pack(f"<{len(self.chunks)}I", *(len(chunk) for chunk in self.chunks))
        return _HEADER.pack(_MAGIC, self.sample_rate, len(self.chunks)) + sizes + b"".join(self.chunks)

    @classmethod
    def decode(cls, blob: bytes) -> "Clip | None":
        try:
            magic, sample_rate, count = _HEADER.unpack_from(blob)
            if magic != _MAGIC:
                return None
            sizes = struct.unpack_from(f"<{count}I", blob, _HEADER.size)
        except struct.error:
            return None
        offset, chunks = _HEADER.size + 4 * count, []
        for size in sizes:
            chunks.append(blob[offset:offset + size])
            offset += size
        return cls(sample_rate, tuple(chunks)) if offset == len(blob) else None


# --- the stores -------------------------------------------------------------------------------------------------
class LocalStore:
    """This process's memory: an LRU by bytes with a TTL per entry (the embedded mode)."""

    def __init__(self):
        self._entries: OrderedDict[str, tuple[bytes, str, float]] = OrderedDict()  # key -> blob, voice, expires
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            if entry[2] <= time.monotonic():
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: str, blob: bytes, *, voice: str, bound: int, ttl: float) -> int | None:
        """Store the clip unless it is there already (or over the bound: None); how many entries it evicted."""
        evicted = 0
        with self._lock:
            if key in self._entries or len(blob) > bound:
                return None
            self._entries[key] = (blob, voice, time.monotonic() + ttl)
            self._bytes += len(blob)
            while self._bytes > bound:
                self._drop(next(iter(self._entries)))
                evicted += 1
        return evicted

    def forget_voice(self, voice: str) -> int:
        with self._lock:
            keys = [key for key, entry in self._entries.items() if entry[1] == voice]
            for key in keys:
                self._drop(key)
        return len(keys)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()
            self._bytes = 0

    @property
    def stored_bytes(self) -> int:
        return self._bytes

    def _drop(self, key: str) -> None:
        blob, _, _ = self._entries.pop(key)
        self._bytes -= len(blob)


# Shared by the Redis scripts: remove one entry and its bookkeeping; returns the bytes freed.
# KEYS: 1 the LRU (sorted set, last use in ms), 2 the sizes (hash: digest -> "bytes:voice"), 3 the byte total.
# ARGV[1]: the key prefix.
_DROP = """
local function drop(digest)
  local meta = redis.call('HGET', KEYS[2], digest)
  redis.call('ZREM', KEYS[1], digest)
  if not meta then return 0 end
  local sep = string.find(meta, ':', 1, true)
  local size = tonumber(string.sub(meta, 1, sep - 1))
  redis.call('DEL', ARGV[1] .. 'entry:' .. digest)
  redis.call('HDEL', KEYS[2], digest)
  redis.call('DECRBY', KEYS[3], size)
  redis.call('SREM', ARGV[1] .. 'voice:' .. string.sub(meta, sep + 1), digest)
  return size
end
"""
# ARGV: prefix, digest, now (ms). The entry, its last use moved to now; an expired one is cleaned up.
_GET = _DROP + """
local blob = redis.call('GET', ARGV[1] .. 'entry:' .. ARGV[2])
if blob then
  redis.call('ZADD', KEYS[1], 'XX', ARGV[3], ARGV[2])
  return blob
end
drop(ARGV[2])
return false
"""
# ARGV: prefix, digest, now (ms), blob, ttl (ms), bound (bytes), voice. The whole clip in one SET; then the least
# recently used entries go until the total is within the bound (a clip over the bound is not stored). Entries not used for a TTL have expired (their
# last use is after their store): their bookkeeping goes first. Returns the number evicted, -1 if not stored
# (present already, or over the bound).
_PUT = _DROP + """
local digest, now, blob, ttl, bound = ARGV[2], tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5]), tonumber(ARGV[6])
if string.len(blob) > bound then return -1 end
for _, stale in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - ttl, 'LIMIT', 0, 100)) do
  drop(stale)
end
if redis.call('EXISTS', ARGV[1] .. 'entry:' .. digest) == 1 then return -1 end
drop(digest)
redis.call('SET', ARGV[1] .. 'entry:' .. digest, blob, 'PX', ttl)
redis.call('ZADD', KEYS[1], now, digest)
redis.call('HSET', KEYS[2], digest, string.len(blob) .. ':' .. ARGV[7])
redis.call('SADD', ARGV[1] .. 'voice:' .. ARGV[7], digest)
local total = redis.call('INCRBY', KEYS[3], string.len(blob))
local evicted = 0
while total > bound do
  local oldest = redis.call('ZRANGE', KEYS[1], 0, 0)[1]
  if not oldest or oldest == digest then break end
  total = total - drop(oldest)
  evicted = evicted + 1
end
return evicted
"""
# ARGV: prefix, voice. Every entry of the voice.
_FORGET = _DROP + """
local digests = redis.call('SMEMBERS', ARGV[1] .. 'voice:' .. ARGV[2])
for _, digest in ipairs(digests) do drop(digest) end
redis.call('DEL', ARGV[1] .. 'voice:' .. ARGV[2])
return #digests
"""


class RedisStore:
    """Redis, shared by every web process. One script per operation: atomic, one round trip. Keys of one store
    are addressed from inside the scripts, so it needs one Redis (not a cluster), as the rest of the service."""

    prefix = "tts:phrase:"

    def __init__(self, url: str):
        import redis

        from callwaiting.redis_client import sync_options

        self.client = redis.Redis.from_url(url, **sync_options())
        self._get, self._put, self._forget = (self.client.register_script(s) for s in (_GET, _PUT, _FORGET))
        self._keys = [f"{self.prefix}lru", f"{self.prefix}sizes", f"{self.prefix}bytes"]

    def get(self, key: str) -> bytes | None:
        return self._get(keys=self._keys, args=[self.prefix, key, _now_ms()])

    def put(self, key: str, blob: bytes, *, voice: str, bound: int, ttl: float) -> int | None:
        evicted = self._put(keys=self._keys, args=[self.prefix, key, _now_ms(), blob, int(ttl * 1000), bound, voice])
        return None if evicted < 0 else evicted

    def forget_voice(self, voice: str) -> int:
        return self._forget(keys=self._keys, args=[self.prefix, voice])

    def clear(self) -> None:
        for key in self.client.scan_iter(match=f"{self.prefix}*", count=1000):
            self.client.delete(key)

    @property
    def stored_bytes(self) -> int:
        return int(self.client.get(self._keys[2]) or 0)


def _now_ms() -> int:
    return int(time.time() * 1000)


_stores: dict[str, LocalStore | RedisStore] = {}
_stores_lock = threading.Lock()


def store() -> LocalStore | RedisStore:
    """Redis where the service has it (REDIS_URL), else this process's memory."""
    url = settings.REDIS_URL
    with _stores_lock:
        if url not in _stores:
            _stores[url] = RedisStore(url) if url else LocalStore()
        return _stores[url]


# --- the requests ------------------------------------------------------------------------------------------------
def _voice_tag(voice) -> str:
    """The voice as the index of its entries knows it (its primary key: a re-clone is a new voice)."""
    return str(voice.pk)


def phrase_key(*, tenant_id: int, voice, engine_version: str, language: str, segments) -> str:
    """A digest of everything the audio depends on. Speed and SSML prosody are in the segments."""
    asked = {
        "tenant": tenant_id,
        "voice": [voice.pk, voice.updated_at.isoformat(), voice.engine_settings],
        "engine": [voice.engine, engine_version],
        "language": language,
        "segments": [protocol.segment_message(segment) for segment in segments],
    }
    return hashlib.sha256(json.dumps(asked, sort_keys=True, default=str).encode()).hexdigest()


def wanted(*, asked: bool | None, tenant, characters: int) -> bool:
    """The request's own `cache` field decides; without one, the tenant's setting. Long texts are never cached:
    they are rarely repeated word for word and would crowd out the short phrases that are."""
    enabled = tenant.phrase_cache if asked is None else asked
    return enabled and characters <= settings.TTS_PHRASE_CACHE_MAX_CHARS


class Phrase:
    """One request's phrase: found in the cache (`hit`), or to be recorded and stored once it succeeded."""

    def __init__(self, *, key: str, voice, engine: str, engine_version: str, clip: Clip | None):
        self.key = key
        self.voice_tag = _voice_tag(voice)
        self.engine = engine
        self.engine_version = engine_version
        self.clip = clip

    @property
    def hit(self) -> bool:
        return self.clip is not None

    @classmethod
    def lookup(cls, *, tenant, voice, engine_version: str, language: str, segments) -> "Phrase":
        key = phrase_key(tenant_id=tenant.pk, voice=voice, engine_version=engine_version, language=language,
                         segments=segments)
        clip = None
        try:
            blob = store().get(key)
            clip = Clip.decode(blob) if blob else None
        except Exception as exc:  # the cache is an optimization: an outage makes a miss, never an error
            logger.warning("phrase cache lookup failed (%s); synthesizing", exc)
        (metrics.PHRASE_CACHE_HITS if clip else metrics.PHRASE_CACHE_MISSES).labels(voice.engine).inc()
        return cls(key=key, voice=voice, engine=voice.engine, engine_version=engine_version, clip=clip)

    def stream(self, job):
        """What the session streams from: the cached clip, or the worker's job recorded on its way."""
        if self.clip is not None:
            return CachedStream(self.clip)
        return RecordingStream(job, limit=settings.TTS_PHRASE_CACHE_BYTES)

    def remember(self, stream) -> bool:
        """Store the recording of a request that succeeded, when it holds the whole clip, made by a worker with the
        engine version it was looked up under (workers of two versions serve during a rolling upgrade)."""
        clip = stream.whole_clip() if isinstance(stream, RecordingStream) else None
        if clip is None:
            return False
        try:
            if heartbeats.worker_engine_version(stream.worker_id, self.engine) != self.engine_version:
                return False
            blob = clip.encode()
            evicted = store().put(self.key, blob, voice=self.voice_tag, bound=settings.TTS_PHRASE_CACHE_BYTES,
                                  ttl=settings.TTS_PHRASE_CACHE_TTL)
        except Exception as exc:
            logger.warning("phrase cache store failed (%s)", exc)
            return False
        if evicted is None:
            return False  # another request stored it first, or it is bigger than the whole cache
        metrics.PHRASE_CACHE_STORES.labels(self.engine).inc()
        if evicted:
            metrics.PHRASE_CACHE_EVICTIONS.labels(self.engine).inc(evicted)
        return True


def forget_voice(*, voice) -> None:
    """Delete every cached clip of a voice (it is being deleted: its audio must not outlive it)."""
    try:
        store().forget_voice(_voice_tag(voice))
    except Exception:
        # Entries left behind are unreachable (the key names the voice's row) and go with their TTL.
        logger.warning("phrase cache: could not delete the clips of voice %s", voice.pk, exc_info=True)


# --- the streams ---------------------------------------------------------------------------------------------------
# A hit has all its audio at hand: after the first chunk as the engine made it (the client starts playing at
# once), the rest goes in pieces of up to this size. Each piece is one write through the server (~0.5 ms each
# under daphne), so the engine's 100 ms chunks would make a 5 s clip take ~25 ms instead of ~3.
REPLAY_PIECE_BYTES = 64 * 1024


def _replay_pieces(chunks: tuple[bytes, ...]) -> list[bytes]:
    pieces, pending, size = list(chunks[:1]), [], 0
    for chunk in chunks[1:]:
        if pending and size + len(chunk) > REPLAY_PIECE_BYTES:
            pieces.append(b"".join(pending))
            pending, size = [], 0
        pending.append(chunk)
        size += len(chunk)
    if pending:
        pieces.append(b"".join(pending))
    return pieces


class CachedStream:
    """A cache hit with the interface of synthesis.dispatch.WorkerStream: replays the clip's chunks."""

    worker_id = CACHE_WORKER_ID
    job_id = ""

    def __init__(self, clip: Clip):
        self.pieces = _replay_pieces(clip.chunks)
        self.sample_rate = clip.sample_rate
        self.received = 0
        self.complete = False
        self.finished = False

    async def start(self) -> bytes:
        return await self.next_chunk() or b""

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def next_chunk(self) -> bytes | None:
        if self.finished:
            return None
        if self.received == len(self.pieces):
            self.complete = self.finished = True
            return None
        self.received += 1
        return self.pieces[self.received - 1]

    async def cancel(self) -> None:
        self.finished = True


class RecordingStream:
    """A worker's stream (synthesis.dispatch.WorkerStream), its chunks recorded as they pass: `whole_clip()` is
    the clip when it was all received and nothing cut or cancelled it, and within `limit` bytes."""

    def __init__(self, inner, *, limit: int):
        self.inner = inner
        self.limit = limit
        self.recorded: list[bytes] = []
        self.recorded_bytes = 0
        self.overflowed = False
        self.cancelled = False
        self.exhausted = False  # chunks() ran to its end

    def __getattr__(self, name):
        return getattr(self.inner, name)  # worker_id, sample_rate, complete, finished...

    def _record(self, chunk: bytes) -> None:
        if not chunk or self.overflowed:
            return
        self.recorded_bytes += len(chunk)
        if self.recorded_bytes > self.limit:
            self.overflowed, self.recorded = True, []  # too big to cache: stop holding it in memory
            return
        self.recorded.append(chunk)

    async def start(self) -> bytes:
        first = await self.inner.start()
        self._record(first)
        return first

    async def chunks(self) -> AsyncIterator[bytes]:
        async for chunk in self.inner.chunks():
            self._record(chunk)
            yield chunk
        self.exhausted = True

    async def next_chunk(self) -> bytes | None:
        chunk = await self.inner.next_chunk()
        if chunk is None:
            self.exhausted = True
        else:
            self._record(chunk)
        return chunk

    async def cancel(self) -> None:
        self.cancelled = True
        await self.inner.cancel()

    def whole_clip(self) -> Clip | None:
        if self.cancelled or self.overflowed or not self.exhausted or not self.inner.complete:
            return None
        return Clip(self.inner.sample_rate, tuple(self.recorded))
