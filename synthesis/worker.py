"""The model worker: holds the engines, takes synthesis jobs from the channel layer while it has room, and
sends audio back to each job's reply channel as it is produced.

In the embedded mode it runs as a task inside the web process (in-memory channel layer); in production it
is `python manage.py tts_worker`, one process per GPU, over channels_redis. The code is the same.

Protocol (all messages are dicts on the channel layer):
  web -> TTS_JOB_CHANNEL   {"type": "tts.job", "job_id", "reply_channel", "engine", "language",
                            "voice_settings", "segments", "accept_by"}
  worker -> reply_channel  {"type": "tts.accepted", "job_id", "worker_id", "worker_channel", "sample_rate"}
                           {"type": "tts.audio", "job_id", "seq", "pcm"}   (16-bit mono PCM)
                           {"type": "tts.done", "job_id", "samples"}
                           {"type": "tts.error", "job_id", "code", "message"}
  web -> worker_channel    {"type": "tts.cancel", "job_id"}
                           {"type": "tts.credit", "job_id", "consumed"}   (audio chunks written to the client)
Backpressure: a job keeps at most TTS_STREAM_WINDOW chunks beyond the last credit in flight; past that it
waits, its engine thread blocks on the small pending queue, and the GPU turns to other jobs. The channel
layer alone cannot do this: channels_redis serves every reply channel of a web process from one shared inbox,
so its capacity is per process, not per stream.
Cloning (from the voice-processing task):
  task -> TTS_JOB_CHANNEL  {"type": "tts.clone", "job_id", "reply_channel", "engine", "reference", "latents",
                            "accept_by"}   (storage names: the clip to read, where to write the latents)
  worker -> reply_channel  {"type": "tts.accepted", ...} then {"type": "tts.cloned", "latents"} or tts.error
"""
import asyncio
import logging
import os
import socket
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer
from django.conf import settings
from django.core.files.base import ContentFile
from django.core.files.storage import default_storage

from synthesis import workers
from synthesis.audio import silence
from synthesis.engines import LoadedEngine, load_engine
from synthesis.engines.base import EngineError, Prosody
from voices.audio import AudioError, decode_reference

logger = logging.getLogger(__name__)

# Audio waiting between an engine thread and the channel layer, per job: enough to absorb jitter, small
# enough that a stalled consumer stops the engine instead of letting it buffer the whole utterance.
_PENDING_CHUNKS = 8
# Audio already waiting is sent as one message of at most this size (about 0.7 s at 22.05 kHz).
_MAX_MESSAGE_BYTES = 32 * 1024
_SILENCE_CHUNK_MS = 100
# How often a worker blocked on a full reply channel looks again (and checks for cancellation).
_FULL_RETRY_SECONDS = 0.02
_END = object()


class _ClientGone(Exception):
    """The web side stopped reading this job's audio."""


class _Job:
    def __init__(self, message: dict):
        self.id = message["job_id"]
        self.message = message
        self.cancelled = threading.Event()
        self.consumed = 0  # audio chunks the web side has written to its client
        self.credit = asyncio.Event()  # set when credit or a cancel arrives
        self.waiting_for_client = False


class ModelWorker:
    def __init__(self, *, engine_names: list[str], capacity: int, worker_id: str | None = None):
        self.engine_names = engine_names
        self.capacity = capacity
        self.worker_id = worker_id or f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        self.engines: dict[str, LoadedEngine] = {}
        self.jobs: dict[str, _Job] = {}
        self.layer = get_channel_layer()
        self.channel = ""
        self._slots = asyncio.Semaphore(capacity)
        self._threads = ThreadPoolExecutor(max_workers=capacity, thread_name_prefix="tts-engine")
        self._stopping = asyncio.Event()
        self.ready = asyncio.Event()  # engines loaded and announced
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
        # channels_redis serves all process-specific channels of a layer from one inbox, which only works
        # when they share the default prefix.
        self.channel = await self.layer.new_channel()

    async def run(self) -> None:
        if not self.channel:
            await self.load()
        tasks = [asyncio.create_task(coro) for coro in (self._heartbeat_loop(), self._control_loop())]
        try:
            await self._job_loop()
            # Graceful stop: no new jobs were taken; let the ones in flight finish.
            await asyncio.gather(*self._job_tasks, return_exceptions=True)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.to_thread(workers.worker_gone, worker_id=self.worker_id)

    def stop(self) -> None:
        self._stopping.set()

    def describe(self) -> dict:
        return {
            "engines": {name: loaded.status() for name, loaded in self.engines.items()},
            "capacity": self.capacity,
            "load": len(self.jobs),
            "waiting_for_client": sum(job.waiting_for_client for job in self.jobs.values()),
            "channel": self.channel,
            "pid": os.getpid(),
            "host": socket.gethostname(),
        }

    async def _heartbeat_loop(self) -> None:
        while True:
            try:
                await asyncio.to_thread(workers.worker_heartbeat, worker_id=self.worker_id, info=self.describe())
                self.ready.set()
            except RuntimeError:
                raise  # the event loop is shutting down (its executor is gone): nothing left to announce
            except Exception:  # a cache outage must not kill the worker; the next beat retries
                logger.exception("worker %s: heartbeat failed", self.worker_id)
            await asyncio.sleep(settings.TTS_WORKER_HEARTBEAT_SECONDS)

    async def _job_loop(self) -> None:
        while not self._stopping.is_set():
            await self._slots.acquire()  # take a job only while there is room for it
            receive = asyncio.create_task(self.layer.receive(settings.TTS_JOB_CHANNEL))
            stop = asyncio.create_task(self._stopping.wait())
            done, _ = await asyncio.wait({receive, stop}, return_when=asyncio.FIRST_COMPLETED)
            if receive not in done:
                receive.cancel()
                self._slots.release()
                break
            stop.cancel()
            job = _Job(receive.result())
            self.jobs[job.id] = job
            task = asyncio.create_task(self._serve_and_release(job))
            self._job_tasks.add(task)
            task.add_done_callback(self._job_tasks.discard)

    async def _control_loop(self) -> None:
        while True:
            message = await self.layer.receive(self.channel)
            job = self.jobs.get(message.get("job_id"))
            if job is None:
                continue
            if message.get("type") == "tts.cancel":
                job.cancelled.set()
            elif message.get("type") == "tts.credit":
                job.consumed = max(job.consumed, message["consumed"])
            job.credit.set()

    # --- one job ------------------------------------------------------------------------------------------
    async def _serve_and_release(self, job: _Job) -> None:
        try:
            await self._serve(job)
        except _ClientGone:
            logger.info("worker %s: job %s dropped, its client stopped reading", self.worker_id, job.id)
        except Exception:
            logger.exception("worker %s: job %s failed", self.worker_id, job.id)
            try:
                await self._reply(job, "tts.error", code="worker_failed", message="The model worker failed on this job.")
            except ChannelFull:
                pass
        finally:
            self.jobs.pop(job.id, None)
            self._slots.release()

    async def _reply(self, job: _Job, kind: str, **fields) -> None:
        """Send to the job's reply channel; while it is full (slow client) wait, up to TTS_CHUNK_TIMEOUT."""
        message = {"type": kind, "job_id": job.id, **fields}
        give_up = time.monotonic() + settings.TTS_CHUNK_TIMEOUT
        while True:
            try:
                return await self.layer.send(job.message["reply_channel"], message)
            except ChannelFull:
                if job.cancelled.is_set() or time.monotonic() > give_up:
                    job.cancelled.set()
                    raise _ClientGone() from None
                await asyncio.sleep(_FULL_RETRY_SECONDS)

    async def _wait_for_credit(self, job: _Job, seq: int) -> bool:
        """Hold chunk `seq` until the client has caught up to within TTS_STREAM_WINDOW chunks; False when the
        job was cancelled meanwhile. The web side drops a stalled client after TTS_CLIENT_STALL_TIMEOUT; the
        worker gives up a little later, in case the web process itself is gone."""
        give_up = time.monotonic() + settings.TTS_CLIENT_STALL_TIMEOUT + 5
        while seq - job.consumed >= settings.TTS_STREAM_WINDOW and not job.cancelled.is_set():
            job.credit.clear()
            left = give_up - time.monotonic()
            if left <= 0:
                logger.info("worker %s: job %s dropped, its client stopped reading", self.worker_id, job.id)
                job.cancelled.set()
                break
            job.waiting_for_client = True
            try:
                await asyncio.wait_for(job.credit.wait(), left)
            except asyncio.TimeoutError:
                pass
            finally:
                job.waiting_for_client = False
        return not job.cancelled.is_set()

    async def _serve(self, job: _Job) -> None:
        message = job.message
        if time.time() > message.get("accept_by", float("inf")):
            return  # the client was already told no worker was available
        loaded = self.engines.get(message["engine"])
        await self._reply(
            job,
            "tts.accepted",
            worker_id=self.worker_id,
            worker_channel=self.channel,
            sample_rate=loaded.info.sample_rate if loaded and loaded.available else 0,
        )
        if loaded is None or not loaded.available:
            reason = loaded.reason if loaded else f"this worker does not run the {message['engine']!r} engine"
            await self._reply(job, "tts.error", code="engine_unavailable", message=reason)
            return
        if message["type"] == "tts.clone":
            await self._clone(job, loaded)
            return
        loop = asyncio.get_running_loop()
        pending: asyncio.Queue = asyncio.Queue(maxsize=_PENDING_CHUNKS)
        render = loop.run_in_executor(self._threads, self._render, job, loaded, pending, loop)
        # Whether its client gave up before any worker took it (a cache round trip): asked while the engine
        # makes the first chunk, so that it adds nothing to the time to first audio.
        abandoned = asyncio.ensure_future(asyncio.to_thread(workers.job_abandoned, job.id))
        seq = samples = 0
        ended = False
        try:
            while not ended and (chunk := await pending.get()) is not _END:
                if seq == 0 and await abandoned:
                    job.cancelled.set()
                if job.cancelled.is_set():
                    continue  # drain so the engine thread is never stuck on a full queue
                if not await self._wait_for_credit(job, seq):
                    continue  # cancelled or stalled meanwhile: drain as above
                chunk, ended = _with_waiting_chunks(chunk, pending)
                await self._reply(job, "tts.audio", seq=seq, pcm=chunk)
                seq += 1
                samples += len(chunk) // 2
            ended = True
        finally:
            if not ended:  # leaving early: stop the engine, and drain until its thread has returned
                job.cancelled.set()
                while not render.done():
                    while not pending.empty():
                        pending.get_nowait()  # a thread blocked on a full queue goes on, sees the cancel
                    await asyncio.wait([render], timeout=_FULL_RETRY_SECONDS)
        try:
            await render
        except EngineError as exc:
            await self._reply(job, "tts.error", code=exc.code, message=exc.message)
            return
        if not job.cancelled.is_set():
            await self._reply(job, "tts.done", samples=samples)

    async def _clone(self, job: _Job, loaded: LoadedEngine) -> None:
        """Conditioning latents from a stored reference clip, written next to it in storage."""
        if not loaded.info.supports_cloning:
            await self._reply(job, "tts.error", code="engine_cannot_clone", message=f"{loaded.name} cannot clone voices")
            return
        loop = asyncio.get_running_loop()
        try:
            name = await loop.run_in_executor(self._threads, _compute_latents, loaded, job.message)
        except AudioError as exc:
            await self._reply(job, "tts.error", code=exc.code, message=exc.message)
            return
        await self._reply(job, "tts.cloned", latents=name)

    def _render(self, job: _Job, loaded: LoadedEngine, pending: asyncio.Queue, loop) -> None:
        """Runs in an engine thread: renders each segment, handing chunks to the event loop as they come."""

        def emit(chunk: bytes) -> bool:
            if job.cancelled.is_set():
                return False
            asyncio.run_coroutine_threadsafe(pending.put(chunk), loop).result()
            return not job.cancelled.is_set()

        message = job.message
        try:
            for segment in message["segments"]:
                if job.cancelled.is_set():
                    break
                if "pause_ms" in segment:
                    gap = silence(milliseconds=segment["pause_ms"], sample_rate=loaded.info.sample_rate)
                    step = len(silence(milliseconds=_SILENCE_CHUNK_MS, sample_rate=loaded.info.sample_rate))
                    for start in range(0, len(gap), step):
                        if not emit(gap[start : start + step]):
                            break
                    continue
                loaded.engine.synthesize(
                    text=segment["text"],
                    language=message["language"],
                    voice_settings=message["voice_settings"],
                    prosody=Prosody(rate=segment["rate"], pitch=segment["pitch"], volume=segment["volume"]),
                    emit=emit,
                )
        finally:
            asyncio.run_coroutine_threadsafe(pending.put(_END), loop).result()


def _with_waiting_chunks(chunk: bytes, pending: asyncio.Queue) -> tuple[bytes, bool]:
    """`chunk` joined with the chunks the engine made while the previous one was on its way (up to
    _MAX_MESSAGE_BYTES), and whether the end of the clip was among them. When the engine runs ahead of the
    channel layer this sends fewer, larger messages; when it does not, nothing waits and nothing is delayed."""
    parts, size = [chunk], len(chunk)
    while size < _MAX_MESSAGE_BYTES and not pending.empty():
        following = pending.get_nowait()
        if following is _END:
            return b"".join(parts), True
        parts.append(following)
        size += len(following)
    return b"".join(parts), False


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
    if _embedded["loop"] is not None and _embedded["loop"] is not loop:
        # A new event loop (each test drives its own): the in-memory layer's queues belong to the old one.
        from channels.layers import channel_layers

        channel_layers.backends.pop("default", None)
    worker = ModelWorker(engine_names=settings.TTS_ENGINES, capacity=settings.TTS_WORKER_CAPACITY)
    _embedded.update(loop=loop, worker=worker, task=loop.create_task(worker.run()))
    return worker
