"""The web side of the worker boundary: queue a job for a model worker, receive its answers as they come.

Jobs go through the job queue (synthesis.jobqueue) to exactly one worker. The worker's answers arrive in this
process's one inbox, whose reader fans them out to a queue per job; every wait has its timeout on that
per-job queue, so no read from Redis is ever cancelled. Credit and cancel go to the inbox of the one worker
that runs the job.
"""
import asyncio
import logging
import time
import uuid
import weakref
from collections.abc import AsyncIterator
from dataclasses import dataclass

from asgiref.sync import async_to_sync
from django.conf import settings

from callwaiting.errors import SERVICE_RETRY_AFTER, ApiError
from synthesis import heartbeats, protocol
from synthesis.frontend import Segment
from synthesis.jobqueue import JobQueue, job_queue, new_inbox_name, uses_redis, worker_inbox

logger = logging.getLogger(__name__)


class DispatchError(ApiError):
    """Dispatching a job or streaming its audio failed (no worker, job queue unreachable, worker lost, or the
    worker's own error). A 503 may be retried: it says when."""

    default_status = 503

    def __init__(self, code: str, message: str, status_code: int | None = None):
        status_code = status_code or self.default_status
        headers = {"Retry-After": str(SERVICE_RETRY_AFTER)} if status_code == 503 else None
        super().__init__(code, message, status_code, headers=headers)


def _queue_unavailable(exc: BaseException) -> DispatchError:
    return DispatchError("queue_unavailable", f"The job queue (Redis) cannot be reached; try again shortly. ({exc})")


@dataclass
class JobSpec:
    engine: str
    language: str
    voice_settings: dict
    segments: list[Segment]


# Worker errors that are the request's fault rather than the service's.
_CLIENT_ERROR_CODES = {
    "invalid_voice_settings": 422, "unsupported_language": 422, "text_too_long": 413, "invalid_audio": 422,
}


class _Replies(asyncio.Queue):
    """A job's answers as they arrive, and whether the last of its audio has come (`made`: the worker is done
    with the job, though its consumer may not have read that far yet)."""

    def __init__(self):
        super().__init__()
        self.made = asyncio.Event()

    def put_nowait(self, message: dict) -> None:
        if message.get("type") == protocol.DONE:
            self.made.set()
        super().put_nowait(message)


class ReplyRouter:
    """This process's one inbox for the answers to all of its jobs, fanned out to a queue per job."""

    def __init__(self, queue: JobQueue):
        self.queue = queue
        self.inbox = new_inbox_name("web")
        self._jobs: dict[str, _Replies] = {}
        self._stopped: dict[tuple[str, str], None] = {}  # jobs told to stop after they ended here (bounded)

    def open(self, job_id: str) -> _Replies:
        replies = self._jobs[job_id] = _Replies()
        return replies

    def close(self, job_id: str) -> None:
        self._jobs.pop(job_id, None)

    def deliver(self, message: dict) -> None:
        job_id, kind, worker_id = message.get("job_id"), message.get("type"), message.get("worker_id")
        if not isinstance(kind, str) or not isinstance(worker_id, str) or not worker_id:
            return  # not a worker's answer
        replies = self._jobs.get(job_id)
        if replies is not None:
            replies.put_nowait(message)
        elif kind in (protocol.ACCEPTED, protocol.AUDIO) and (job_id, worker_id) not in self._stopped:
            # A job this process no longer waits for (it gave up, its client left) is still running: stop it.
            self._stopped[(job_id, worker_id)] = None
            while len(self._stopped) > 1024:
                self._stopped.pop(next(iter(self._stopped)))
            cancel = {"type": protocol.CANCEL, "job_id": job_id}
            task = asyncio.ensure_future(self.queue.send(worker_inbox(worker_id), cancel))
            task.add_done_callback(lambda done: done.cancelled() or done.exception())  # best effort


_routers: "weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Future]" = weakref.WeakKeyDictionary()


async def reply_router() -> ReplyRouter:
    """The running event loop's router, its inbox open before the first job is queued."""
    loop = asyncio.get_running_loop()
    opening = _routers.get(loop)
    if opening is None:

        async def open_router() -> ReplyRouter:
            router = ReplyRouter(job_queue())
            await router.queue.open_inbox(router.inbox, router.deliver)
            return router

        opening = _routers[loop] = asyncio.ensure_future(open_router())
    try:
        return await asyncio.shield(opening)
    except Exception:
        _routers.pop(loop, None)  # Redis was down: the next request tries again
        raise


class WorkerJob:
    """A job for whichever model worker takes it; its answers come through this process's ReplyRouter."""

    kind = ""

    def __init__(self):
        self.job_id = uuid.uuid4().hex
        self.entry = ""  # the job's id in the queue
        self.worker_id = ""  # the worker running it
        self.sample_rate = 0
        self.finished = False
        self.answered = False  # the worker sent more than its acceptance: the job is that worker's for good
        self._router: ReplyRouter | None = None
        self._replies: _Replies | None = None
        self._disowned: set[str] = set()

    async def submit(self, fields: dict) -> None:
        """Queue the job and wait until a worker accepts it."""
        from synthesis.worker import ensure_embedded_worker

        ensure_embedded_worker()
        try:
            self._router = await reply_router()
        except Exception as exc:  # Redis unreachable: this process's inbox cannot be opened
            self.finished = True
            raise _queue_unavailable(exc) from None
        self._replies = self._router.open(self.job_id)
        accept_timeout = settings.TTS_JOB_ACCEPT_TIMEOUT
        message = {
            "type": self.kind, "job_id": self.job_id, "reply_to": self._router.inbox,
            "accept_by": time.time() + accept_timeout, **fields,
        }
        try:
            self.entry = await self._router.queue.submit(message)
        except Exception as exc:  # Redis unreachable
            self._finish()
            raise _queue_unavailable(exc) from None
        await self._next(accept_timeout)

    async def _next(self, timeout: float) -> dict:
        """The next answer from the job's worker (its acceptance when none had the job).

        Once a worker has the job, its heartbeat is checked whenever it is quiet. A worker that died before it
        answered leaves the job to another worker, which claims it from the queue; one that died after fails
        the job (worker_lost) within TTS_WORKER_DEAD_AFTER."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        orphaned = False
        while True:
            left = deadline - loop.time()
            wait = min(left, settings.TTS_WORKER_DEAD_AFTER / 3) if self.worker_id else left
            try:
                message = await asyncio.wait_for(self._replies.get(), max(wait, 0))
            except asyncio.TimeoutError:
                message = None
            if message is not None:
                sender = message["worker_id"]
                if message["type"] == protocol.ACCEPTED and not self.answered and sender != self.worker_id:
                    if self.worker_id:  # claimed from a worker found dead before this process noticed
                        await self._disown(self.worker_id)
                    self.worker_id, self.sample_rate = sender, message.get("sample_rate", 0)
                    return message
                if sender != self.worker_id:
                    await self._disown(sender)  # never mix two workers' audio in one answer
                    continue
                self.answered = self.answered or message["type"] != protocol.ACCEPTED
                return message
            if self.worker_id and not await self._worker_alive():
                if self.answered:
                    await self._fail("worker_lost", "The model worker serving this request stopped; try again.")
                logger.info("job %s: worker %s died before answering; waiting for another", self.job_id,
                            self.worker_id)
                self.worker_id, orphaned = "", True
                deadline = loop.time() + settings.TTS_JOB_ACCEPT_TIMEOUT
                continue
            if loop.time() < deadline:
                continue
            if orphaned:
                await self._fail("worker_lost", "The model worker serving this request stopped and no other "
                                 "took the job over; try again.")
            if not self.worker_id:
                await self._fail(
                    "no_worker_available", f"No model worker took the job within {timeout:g} s; try again shortly."
                )
            await self._fail("worker_timeout", f"The model worker did not answer for {timeout:g} s.")

    async def _worker_alive(self) -> bool:
        """Whether the job's worker still beats. Redis unreachable: neither its answers nor its heartbeat can
        arrive, so the job fails now as the queue's outage (503), not later as a timeout or a crash."""
        try:
            return await asyncio.to_thread(heartbeats.worker_alive, self.worker_id)
        except Exception as exc:
            error = _queue_unavailable(exc)
            await self._fail(error.code, error.message)

    async def _fail(self, code: str, message: str):
        """Give the job up everywhere (its worker frees the slot at once), then raise."""
        await self.cancel()
        raise DispatchError(code, message)

    async def _disown(self, worker_id: str) -> None:
        """Cancel the job on a worker that is not (or no longer) the one running it."""
        if worker_id not in self._disowned:
            self._disowned.add(worker_id)
            logger.info("job %s: cancelled on worker %s", self.job_id, worker_id)
            await self._control(worker_id, {"type": protocol.CANCEL})

    async def _control(self, worker_id: str, message: dict) -> None:
        try:
            await self._router.queue.send(worker_inbox(worker_id), {**message, "job_id": self.job_id})
        except Exception:  # a lost control message is covered: the worker gives up a stalled job by itself
            logger.warning("job %s: could not reach worker %s", self.job_id, worker_id, exc_info=True)

    def _finish(self) -> None:
        self.finished = True
        if self._router is not None:
            self._router.close(self.job_id)

    def _raise(self, message: dict):
        self._finish()
        raise DispatchError(message["code"], message["message"], _CLIENT_ERROR_CODES.get(message["code"], 503))

    async def cancel(self) -> None:
        """The client is gone: stop the job wherever it is, at once."""
        if self.finished:
            return
        self._finish()
        if self._router is None:
            return
        if self.worker_id:
            await self._control(self.worker_id, {"type": protocol.CANCEL})
            return
        # Not taken (or its worker died before answering): out of the queue. A worker that had read it already
        # answers to a job this process no longer knows, and ReplyRouter.deliver tells it to stop.
        if self.entry:
            try:
                await self._router.queue.withdraw(self.entry)
            except Exception:
                logger.warning("job %s: could not withdraw it", self.job_id, exc_info=True)


class ConditioningJob(WorkerJob):
    """Have a worker compute a voice's conditioning latents from its stored reference clip."""

    kind = protocol.CLONE

    async def run(self, *, engine: str, reference: str, latents: str) -> str:
        await self.submit({"engine": engine, "reference": reference, "latents": latents})
        while True:
            message = await self._next(settings.TTS_CLONE_TIMEOUT)
            if message["type"] == protocol.ERROR:
                self._raise(message)
            if message["type"] == protocol.CLONED:
                self._finish()
                return message["latents"]


def run_conditioning_job(*, engine: str, reference: str, latents: str) -> str:
    """A ConditioningJob from synchronous code (the voice-processing task); returns the latents' storage name.

    With Redis, the task gets an event loop of its own, and its inbox reader and connections are closed with
    it. The embedded worker lives on the web process's loop, which async_to_sync reuses where there is one."""
    if not uses_redis():
        return async_to_sync(ConditioningJob().run)(engine=engine, reference=reference, latents=latents)

    async def once() -> str:
        try:
            return await ConditioningJob().run(engine=engine, reference=reference, latents=latents)
        finally:
            await job_queue().close()

    return asyncio.run(once())


class WorkerStream(WorkerJob):
    """One synthesis job in flight: `start()` waits for the first audio, `chunks()` yields the rest."""

    kind = protocol.JOB

    def __init__(self, spec: JobSpec):
        super().__init__()
        self.spec = spec
        self.received = 0  # audio chunks handed to the caller
        self.complete = False  # the worker said the clip is whole (not merely: no more audio is coming)
        self.acknowledged = 0  # of those, how many the worker has been told about

    async def start(self) -> bytes:
        """Queue the job; return the first audio chunk (empty when the clip is silent)."""
        await self.submit({
            "engine": self.spec.engine,
            "language": self.spec.language,
            "voice_settings": self.spec.voice_settings,
            "segments": [protocol.segment_message(segment) for segment in self.spec.segments],
        })
        return await self.next_chunk() or b""

    async def all_made(self) -> None:
        """Returns once the worker has made the whole clip (its slot is free again), while up to a credit window
        of its audio may still wait here to be read."""
        await self._replies.made.wait()

    async def keep_alive(self) -> None:
        """Tell the worker this process is still there though it reads nothing (a job made ahead of its turn):
        credit for nothing new, so the worker does not give the job up as abandoned."""
        if not self.finished and self.worker_id:
            await self._control(self.worker_id, {"type": protocol.CREDIT, "consumed": self.acknowledged})

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def next_chunk(self) -> bytes | None:
        """The next audio chunk, or None once no more is coming: the clip is `complete`, or it was cancelled.

        Asking for the next chunk means the caller has written the previous ones out, so this is where the
        worker gets credit to send more (backpressure: see TTS_STREAM_WINDOW). Credit goes in batches of
        half a window, so the worker never idles for it and few extra messages are sent."""
        while not self.finished:
            if self.received - self.acknowledged >= max(1, settings.TTS_STREAM_WINDOW // 2):
                self.acknowledged = self.received
                await self._control(self.worker_id, {"type": protocol.CREDIT, "consumed": self.received})
            message = await self._next(settings.TTS_CHUNK_TIMEOUT)
            kind = message["type"]
            if kind == protocol.AUDIO:
                self.received += 1
                return message["pcm"]
            if kind == protocol.DONE:
                self.complete = True
                self._finish()
            elif kind == protocol.ERROR:
                self._raise(message)
        return None
