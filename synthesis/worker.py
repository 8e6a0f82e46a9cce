"""The model worker: holds the engines, takes jobs from the job queue while it has a free slot, and sends the
audio back to the inbox of the web process that queued the job, as it is produced.

In the embedded mode it runs as a task inside the web process (synthesis.jobqueue.MemoryJobQueue); in
production it is `python manage.py tts_worker`, one process per GPU, over Redis Streams (RedisJobQueue).
The code is the same.

The messages it exchanges with web processes are in synthesis/protocol.py. The worker acknowledges a job in the queue with its first answer after the acceptance, in the same step as
sending it. Until then, if the worker dies, another worker claims the job and runs it; after that, the job
is this worker's (the web side learns of its death from its heartbeat and fails the request: worker_lost).

Isolation: no engine lock is ever held while waiting for a client. The engine renders a sentence at a time
into the job's own buffer (`emit` never blocks); the sender forwards it while the client keeps up. A client
that falls behind (no credit for TTS_STREAM_WINDOW messages) parks only its own job: the sender waits, and the
engine thread waits between sentences once the buffer is full, holding no lock. A job parks in its slot, so a
worker whose slots are all parked takes no more jobs (`accepting` false in its heartbeat).
"""
import asyncio
import collections
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from callwaiting.redis_client import is_redis_error
from synthesis import heartbeats, protocol
from synthesis.audio import silence
from synthesis.engines import LoadedEngine, load_engine
from synthesis.engines.base import EngineError
from synthesis.frontend import Pause, split_sentences
from synthesis.jobqueue import MAX_DELIVERIES, Delivery, job_queue, worker_inbox
from voices.audio import AudioError, decode_reference

logger = logging.getLogger(__name__)

# Audio already rendered is sent as one message of at most this size (about 0.7 s at 22.05 kHz).
_MAX_MESSAGE_BYTES = 32 * 1024
# The engine renders the next sentence only while less than this is waiting in the job's buffer: a parked
# stream holds at most this plus one sentence.
_BUFFER_HIGH_WATER = 64 * 1024
# Text is rendered in pieces of at most this many characters (sentences, long ones wrapped at spaces).
_PIECE_CHARS = 400
_SILENCE_CHUNK_MS = 100
# How often a worker whose engines are saturated looks again before it takes another job.
_SATURATED_RETRY_SECONDS = 0.05


class _ClientGone(Exception):
    """The web side stopped reading this job's audio."""


class _AudioBuffer:
    """Audio between one job's engine thread and its sender. `put` never blocks (the engine may hold a lock);
    the engine thread waits for room only between sentences, in `wait_for_room`, holding nothing."""

    def __init__(self, loop: asyncio.AbstractEventLoop):
        self._loop = loop
        self._chunks: collections.deque[bytes] = collections.deque()
        self._size = 0
        self._ended = False
        self._condition = threading.Condition()
        self._ready = asyncio.Event()
        # The engine thread is paused until the sender catches up: True only while the buffer is at its high-water
        # mark and the engine waits for room (cleared by the take that makes room, under the lock).
        self.engine_waiting = False

    # engine thread
    def put(self, chunk: bytes) -> None:
        with self._condition:
            self._chunks.append(chunk)
            self._size += len(chunk)
        self._loop.call_soon_threadsafe(self._ready.set)

    def end(self) -> None:
        with self._condition:
            self._ended = True
        self._loop.call_soon_threadsafe(self._ready.set)

    def wait_for_room(self, cancelled: threading.Event) -> None:
        with self._condition:
            while self._size >= _BUFFER_HIGH_WATER and not cancelled.is_set():
                self.engine_waiting = True
                self._condition.wait()
            self.engine_waiting = False

    def wake(self) -> None:
        """A cancel: the engine thread stops waiting for room."""
        with self._condition:
            self._condition.notify_all()

    # event loop
    async def take(self) -> tuple[bytes, bool]:
        """The audio waiting (at least one chunk, up to _MAX_MESSAGE_BYTES), and whether the clip ended."""
        while True:
            with self._condition:
                if self._chunks:
                    parts = [self._chunks.popleft()]
                    size = len(parts[0])
                    while self._chunks and size + len(self._chunks[0]) <= _MAX_MESSAGE_BYTES:
                        parts.append(self._chunks.popleft())
                        size += len(parts[-1])
                    self._size -= size
                    if self._size < _BUFFER_HIGH_WATER:
                        # Room for the engine: it is no longer paused from here on, whenever its thread runs
                        # again, so engines_paused never reports an engine that is about to render more.
                        self.engine_waiting = False
                    self._condition.notify_all()
                    return b"".join(parts), self._ended and not self._chunks
                if self._ended:
                    return b"", True
                self._ready.clear()
            await self._ready.wait()


class _Job:
    def __init__(self, delivery: Delivery, loop: asyncio.AbstractEventLoop):
        self.delivery = delivery
        self.message = delivery.job
        self.id = self.message["job_id"]
        self.cancelled = threading.Event()
        self.consumed = 0  # audio messages the web side has written to its client
        self.credit = asyncio.Event()  # set when credit or a cancel arrives
        self.waiting_for_client = False
        self.acked = False
        self.buffer = _AudioBuffer(loop)

    def cancel(self) -> None:
        self.cancelled.set()
        self.credit.set()
        self.buffer.wake()


class ModelWorker:
    def __init__(self, *, engine_names: list[str], capacity: int = 0, worker_id: str | None = None):
        self.engine_names = engine_names
        self.capacity = capacity  # jobs served at once; 0: from the engines (see load)
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.engines: dict[str, LoadedEngine] = {}
        self.jobs: dict[str, _Job] = {}
        self.queue = None  # the event loop's job queue, taken in load()
        self.jobs_started = 0  # engine runs begun, re-deliveries included
        self._slots: asyncio.Semaphore | None = None
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="tts-load")
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # engines loaded and announced
        self.loaded = False  # every engine has been loaded (or failed to); until then they show as loading
        self._heartbeat: asyncio.Task | None = None
        self._beat_now = asyncio.Event()
        self._job_tasks: set[asyncio.Task] = set()

    # --- lifecycle ----------------------------------------------------------------------------------------
    async def load(self) -> None:
        loop = asyncio.get_running_loop()
        for name in self.engine_names:
            loaded = await loop.run_in_executor(self._threads, load_engine, name)
            self.engines[name] = loaded
            if loaded.available:
                logger.info("worker %s: engine %s loaded", self.worker_id, name)
            else:
                logger.warning("worker %s: engine %s unavailable: %s", self.worker_id, name, loaded.reason)
        if not self.capacity:
            # As many jobs as the engines can serve together: a batching engine's slots, else the default.
            slots = [engine.stats()["slots"] for engine in self._batching_engines().values()]
            self.capacity = max([settings.TTS_WORKER_CAPACITY or 8, *slots])
        self._slots = asyncio.Semaphore(self.capacity)
        self._threads = ThreadPoolExecutor(max_workers=self.capacity + 1, thread_name_prefix="tts-engine")
        self.queue = job_queue()
        while True:  # Redis may be down when the worker starts: wait for it rather than exit
            try:
                await self.queue.open_inbox(worker_inbox(self.worker_id), self._on_control)
                break
            except Exception as exc:
                logger.warning("worker %s: cannot open its inbox (%s); retrying", self.worker_id, exc)
                await asyncio.sleep(settings.TTS_WORKER_HEARTBEAT_SECONDS)
        self.loaded = True
        self._beat_now.set()  # announce the loaded engines now (and become `ready`), not a beat later

    def _batching_engines(self) -> dict:
        """Engines that serve many streams together and report their batch (slots in use, step time)."""
        return {name: loaded.engine for name, loaded in self.engines.items()
                if loaded.available and hasattr(loaded.engine, "stats")}

    def _saturated(self) -> bool:
        """An engine cannot take more in real time (its slots are full, or its steps are too slow)."""
        return any(engine.saturated() for engine in self._batching_engines().values())

    def start_heartbeat(self) -> None:
        """Announce the worker from now on, every TTS_WORKER_HEARTBEAT_SECONDS. Started before the engines load
        (XTTS takes a while), so the web tier answers "loading" with Retry-After in the meantime, instead of
        "no worker serves this engine"."""
        if self._heartbeat is None:
            self._heartbeat = asyncio.create_task(self._heartbeat_loop())

    async def run(self) -> None:
        self.start_heartbeat()
        try:
            if self.queue is None:
                await self.load()
            await self._job_loop()
            # Graceful stop: no new jobs were taken; let the ones in flight finish.
            await asyncio.gather(*self._job_tasks, return_exceptions=True)
            try:
                await self.queue.leave(self.worker_id)
            except Exception:  # Redis down: the group's sweep removes this consumer later
                logger.warning("worker %s: could not leave the consumer group", self.worker_id, exc_info=True)
        finally:
            if self._heartbeat is not None:
                self._heartbeat.cancel()
            try:
                await asyncio.to_thread(heartbeats.worker_gone, worker_id=self.worker_id)
            except Exception:  # Redis down: the heartbeat expires by itself within TTS_WORKER_DEAD_AFTER
                logger.warning("worker %s: could not withdraw its heartbeat", self.worker_id, exc_info=True)

    def stop(self) -> None:
        self._stopping.set()

    def describe(self) -> dict:
        parked = sum(job.waiting_for_client for job in self.jobs.values())
        return {
            "engines": {name: self._engine_status(name) for name in self.engine_names},
            "loading": not self.loaded,
            "capacity": self.capacity,
            "load": len(self.jobs),
            "waiting_for_client": parked,
            "engines_paused": sum(job.buffer.engine_waiting for job in self.jobs.values()),
            # Taking jobs: a free slot, engines keeping up, not stopping. Parked streams keep their slots.
            "accepting": self.loaded and len(self.jobs) < self.capacity and not self._stopping.is_set()
            and not self._saturated(),
            "batches": {name: engine.stats() for name, engine in self._batching_engines().items()},
            "jobs_started": self.jobs_started,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    def _engine_status(self, name: str) -> dict:
        """What the heartbeat says of an engine. The worker takes jobs once all its engines are loaded, so until
        then even an engine already loaded is announced as loading (one that failed says why at once)."""
        loaded = self.engines.get(name)
        if loaded is not None and (self.loaded or not loaded.available):
            return loaded.status()
        return {"available": False, "loading": True, "reason": "loading"}

    async def _heartbeat_loop(self) -> None:
        failing = False
        while True:
            try:
                loaded = self.loaded
                await asyncio.to_thread(heartbeats.worker_heartbeat, worker_id=self.worker_id, info=self.describe())
                if loaded:
                    self.ready.set()
                if failing:
                    logger.warning("worker %s: heartbeat written again", self.worker_id)
                failing = False
            except RuntimeError:
                raise  # the event loop is shutting down (its executor is gone): nothing left to announce
            except Exception as exc:  # a cache outage must not kill the worker; the next beat retries
                if not failing:
                    logger.warning("worker %s: heartbeat failed (%s); retrying every beat", self.worker_id, exc)
                failing = True
            try:  # the next beat: after the interval, or at once when the engines finish loading
                await asyncio.wait_for(self._beat_now.wait(), settings.TTS_WORKER_HEARTBEAT_SECONDS)
            except asyncio.TimeoutError:
                pass
            self._beat_now.clear()

    async def _job_loop(self) -> None:
        """Take a job only while a slot is free; between reads, claim the jobs of workers that died."""
        loop = asyncio.get_running_loop()
        next_claim = 0.0
        failing = False  # Redis is unreachable: logged once per outage, retried every half second
        while not self._stopping.is_set():
            await self._slots.acquire()
            deliveries = []
            try:
                if self._saturated():  # more would slow every stream down: leave the job to another worker
                    self._slots.release()
                    await asyncio.sleep(_SATURATED_RETRY_SECONDS)
                    continue
                if failing:  # Redis is back, maybe empty: credit and cancel must reach this worker's inbox again
                    await self.queue.ensure_inbox(worker_inbox(self.worker_id))
                if loop.time() >= next_claim:
                    next_claim = loop.time() + settings.TTS_WORKER_HEARTBEAT_SECONDS
                    deliveries = await self.queue.claim_orphans(self.worker_id, self._alive, limit=1)
                if not deliveries and not self._stopping.is_set():
                    # A bounded wait, never cancelled (a cancelled read could lose a job Redis handed out).
                    taken = await self.queue.take(self.worker_id, settings.TTS_WORKER_HEARTBEAT_SECONDS)
                    deliveries = [taken] if taken else []
                if failing:
                    logger.warning("worker %s: reading the job queue again", self.worker_id)
                failing = False
            except Exception as exc:  # an outage of Redis must never end the worker: it serves again after
                if not failing:
                    logger.warning("worker %s: reading the job queue failed (%s); retrying", self.worker_id, exc,
                                   exc_info=not is_redis_error(exc))
                failing = True
                await asyncio.sleep(0.5)
            if not deliveries:
                self._slots.release()
                continue
            delivery = deliveries[0]
            job = _Job(delivery, loop)
            self.jobs[job.id] = job
            task = asyncio.create_task(self._serve_and_release(job))
            self._job_tasks.add(task)
            task.add_done_callback(self._job_tasks.discard)

    @staticmethod
    async def _alive(worker_ids: list[str]) -> dict[str, bool]:
        return await asyncio.to_thread(heartbeats.workers_alive, worker_ids)

    def _on_control(self, message: dict) -> None:
        job = self.jobs.get(message.get("job_id"))
        if job is None:
            return
        if message.get("type") == protocol.CANCEL:
            job.cancel()
        elif message.get("type") == protocol.CREDIT and isinstance(message.get("consumed"), int):
            job.consumed = max(job.consumed, message["consumed"])
            job.credit.set()

    # --- one job ------------------------------------------------------------------------------------------
    async def _serve_and_release(self, job: _Job) -> None:
        try:
            await self._serve(job)
        except _ClientGone:
            logger.info("worker %s: job %s dropped, its client is gone", self.worker_id, job.id)
        except asyncio.CancelledError:
            raise  # the event loop is ending: unacknowledged, the job goes to another worker
        except Exception:
            logger.exception("worker %s: job %s failed", self.worker_id, job.id)
            try:
                await self._reply(job, protocol.ERROR, code="worker_failed", message="The model worker failed on this job.")
            except Exception:
                pass
        finally:
            self.jobs.pop(job.id, None)
            self._slots.release()
        if not job.acked:
            try:
                await self.queue.ack(job.delivery)
            except Exception:
                logger.warning("worker %s: could not acknowledge job %s", self.worker_id, job.id, exc_info=True)

    async def _reply(self, job: _Job, kind: str, **fields) -> None:
        """Send to the job's web process; any answer but the acceptance also acknowledges the job."""
        ack = job.delivery if kind != protocol.ACCEPTED and not job.acked else None
        message = {"type": kind, "job_id": job.id, "worker_id": self.worker_id, **fields}
        delivered = await self.queue.send(job.message["reply_to"], message, ack=ack)
        job.acked = job.acked or ack is not None
        if not delivered:
            job.cancel()
            raise _ClientGone()

    async def _wait_for_credit(self, job: _Job, seq: int) -> bool:
        """Hold message `seq` until the client has caught up to within TTS_STREAM_WINDOW messages; False when
        the job was cancelled meanwhile. The web side drops a stalled client after TTS_CLIENT_STALL_TIMEOUT;
        the worker gives up when it has heard nothing from the web side a little longer, in case the web
        process itself is gone (a job made ahead of its turn on /v1/stream hears a keep-alive meanwhile)."""
        give_up = time.monotonic() + settings.TTS_CLIENT_STALL_TIMEOUT + 5
        while seq - job.consumed >= settings.TTS_STREAM_WINDOW and not job.cancelled.is_set():
            job.credit.clear()
            left = give_up - time.monotonic()
            if left <= 0:
                logger.info("worker %s: job %s dropped, its client stopped reading", self.worker_id, job.id)
                job.cancel()
                break
            job.waiting_for_client = True
            try:
                await asyncio.wait_for(job.credit.wait(), left)
                give_up = time.monotonic() + settings.TTS_CLIENT_STALL_TIMEOUT + 5  # the web side is there
            except asyncio.TimeoutError:
                pass
            finally:
                job.waiting_for_client = False
        return not job.cancelled.is_set()

    async def _serve(self, job: _Job) -> None:
        message = job.message
        first_delivery = job.delivery.deliveries == 1
        if first_delivery and time.time() > message.get("accept_by", float("inf")):
            return  # the client was already told no worker was available
        if job.delivery.deliveries > MAX_DELIVERIES:
            await self._reply(job, protocol.ERROR, code="worker_failed",
                              message=f"The job was given to {MAX_DELIVERIES} model workers that all stopped.")
            return
        loaded = self.engines.get(message["engine"])
        await self._reply(job, protocol.ACCEPTED, sample_rate=loaded.info.sample_rate if loaded and loaded.available else 0)
        if loaded is None or not loaded.available:
            reason = loaded.reason if loaded else f"this worker does not run the {message['engine']!r} engine"
            await self._reply(job, protocol.ERROR, code="engine_unavailable", message=reason)
            return
        self.jobs_started += 1
        logger.info("worker %s: job %s started (%s, delivery %d)", self.worker_id, job.id, message["type"],
                    job.delivery.deliveries)
        if message["type"] == protocol.CLONE:
            await self._clone(job, loaded)
            return
        loop = asyncio.get_running_loop()
        render = loop.run_in_executor(self._threads, self._render, job, loaded)
        seq = samples = 0
        ended = False
        try:
            while not ended:
                if not await self._wait_for_credit(job, seq):
                    break
                chunk, ended = await job.buffer.take()
                if chunk:
                    await self._reply(job, protocol.AUDIO, seq=seq, pcm=chunk)
                    seq += 1
                    samples += len(chunk) // 2
        finally:
            if not ended:  # leaving early (cancelled, client gone, a failure): stop the engine
                job.cancel()
            await asyncio.wait([render])  # its thread returns promptly: emit refuses, waits end on cancel
        try:
            render.result()
        except EngineError as exc:
            await self._reply(job, protocol.ERROR, code=exc.code, message=exc.message)
            return
        if not job.cancelled.is_set():
            await self._reply(job, protocol.DONE, samples=samples)

    async def _clone(self, job: _Job, loaded: LoadedEngine) -> None:
        """Conditioning latents from a stored reference clip, written next to it in storage."""
        if not loaded.info.supports_cloning:
            await self._reply(job, protocol.ERROR, code="engine_cannot_clone", message=f"{loaded.name} cannot clone voices")
            return
        loop = asyncio.get_running_loop()
        try:
            name = await loop.run_in_executor(self._threads, _compute_latents, loaded, job.message)
        except AudioError as exc:
            await self._reply(job, protocol.ERROR, code=exc.code, message=exc.message)
            return
        await self._reply(job, protocol.CLONED, latents=name)

    def _render(self, job: _Job, loaded: LoadedEngine) -> None:
        """Runs in an engine thread: renders the job a sentence at a time into its buffer, waiting (holding
        no lock) while the buffer is full."""

        def emit(chunk: bytes) -> bool:
            if job.cancelled.is_set():
                return False
            job.buffer.put(chunk)
            return True

        message = job.message
        rate = loaded.info.sample_rate
        try:
            for segment in map(protocol.segment_from_message, message["segments"]):
                job.buffer.wait_for_room(job.cancelled)
                if job.cancelled.is_set():
                    return
                if isinstance(segment, Pause):
                    gap = silence(milliseconds=segment.milliseconds, sample_rate=rate)
                    step = len(silence(milliseconds=_SILENCE_CHUNK_MS, sample_rate=rate))
                    for start in range(0, len(gap), step):
                        emit(gap[start : start + step])
                    continue
                for index, piece in enumerate(split_sentences(segment.text, _PIECE_CHARS)):
                    if index:
                        job.buffer.wait_for_room(job.cancelled)
                    if job.cancelled.is_set():
                        return
                    loaded.engine.synthesize(
                        text=piece, language=message["language"], voice_settings=message["voice_settings"],
                        prosody=segment.prosody, emit=emit,
                    )
        finally:
            job.buffer.end()


def _compute_latents(loaded: LoadedEngine, message: dict) -> str:
    with default_storage.open(message["reference"], "rb") as handle:
        samples, rate = decode_reference(handle.read())
    latents = loaded.engine.compute_conditioning(samples, rate)
    default_storage.delete(message["latents"])  # a retried job replaces its own earlier result
    return default_storage.save(message["latents"], ContentFile(latents))


# --- the embedded worker ------------------------------------------------------------------------------------
_embedded: dict = {"loop": None, "task": None, "worker": None}


def ensure_embedded_worker() -> ModelWorker | None:
    """Start the in-process worker on the running event loop, once (embedded mode only)."""
    if not settings.TTS_EMBEDDED_WORKER:
        return None
    loop = asyncio.get_running_loop()
    task = _embedded["task"]
    if _embedded["loop"] is loop and task is not None and not task.done():
        return _embedded["worker"]
    worker = ModelWorker(engine_names=settings.TTS_ENGINES)
    _embedded.update(loop=loop, worker=worker, task=loop.create_task(worker.run()))
    return worker
