"""The web side of the worker boundary: send a job over the channel layer, receive its audio as it comes."""
import asyncio
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass

from channels.layers import get_channel_layer
from django.conf import settings

from synthesis import workers
from synthesis.frontend import Pause, Segment


class DispatchError(Exception):
    def __init__(self, code: str, message: str, status: int = 503):
        super().__init__(message)
        self.code = code
        self.message = message
        self.status = status


def _segment_message(segment: Segment) -> dict:
    if isinstance(segment, Pause):
        return {"pause_ms": segment.milliseconds}
    prosody = segment.prosody
    return {"text": segment.text, "rate": prosody.rate, "pitch": prosody.pitch, "volume": prosody.volume}


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


class WorkerJob:
    """A job sent to whichever model worker takes it, with a private reply channel for its answers."""

    def __init__(self):
        self.job_id = uuid.uuid4().hex
        self.layer = None  # taken in submit(), on the event loop that serves the request
        self.reply_channel = ""
        self.worker_channel = ""
        self.worker_id = ""
        self.finished = False

    async def _next(self, timeout: float) -> dict:
        """The next message from the worker. Once a worker has the job, its heartbeat is checked whenever it
        is quiet, so a worker that died (kill -9, lost machine) fails the job within TTS_WORKER_DEAD_AFTER."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            left = deadline - asyncio.get_running_loop().time()
            wait = min(left, settings.TTS_WORKER_DEAD_AFTER / 3) if self.worker_id else left
            try:
                return await asyncio.wait_for(self.layer.receive(self.reply_channel), max(wait, 0))
            except asyncio.TimeoutError:
                pass
            if not self.worker_channel and left <= wait:
                raise DispatchError(
                    "no_worker_available", f"No model worker took the job within {timeout:g} s; try again shortly."
                )
            if self.worker_id and not await asyncio.to_thread(workers.worker_alive, self.worker_id):
                self.finished = True
                raise DispatchError("worker_lost", "The model worker serving this request stopped; try again.")
            if left <= wait:
                raise DispatchError("worker_timeout", f"The model worker did not answer for {timeout:g} s.")

    async def submit(self, kind: str, fields: dict) -> dict:
        """Send the job and wait until a worker accepts it; returns the acceptance."""
        from synthesis.worker import ensure_embedded_worker

        ensure_embedded_worker()
        self.layer = get_channel_layer()
        self.reply_channel = await self.layer.new_channel()
        accept_timeout = settings.TTS_JOB_ACCEPT_TIMEOUT
        message = {"type": kind, "job_id": self.job_id, "reply_channel": self.reply_channel, **fields}
        await self.layer.send(settings.TTS_JOB_CHANNEL, {**message, "accept_by": time.time() + accept_timeout})
        accepted = await self._next(accept_timeout)
        self.worker_channel, self.worker_id = accepted["worker_channel"], accepted["worker_id"]
        return accepted

    def _raise(self, message: dict):
        self.finished = True
        raise DispatchError(message["code"], message["message"], _CLIENT_ERROR_CODES.get(message["code"], 503))


class ConditioningJob(WorkerJob):
    """Have a worker compute a voice's conditioning latents from its stored reference clip."""

    async def run(self, *, engine: str, reference: str, latents: str) -> str:
        await self.submit("tts.clone", {"engine": engine, "reference": reference, "latents": latents})
        message = await self._next(settings.TTS_CLONE_TIMEOUT)
        if message["type"] == "tts.error":
            self._raise(message)
        self.finished = True
        return message["latents"]


class WorkerStream(WorkerJob):
    """One synthesis job in flight: `start()` waits for the first audio, `chunks()` yields the rest."""

    def __init__(self, spec: JobSpec):
        super().__init__()
        self.spec = spec
        self.sample_rate = 0
        self.received = 0  # audio chunks handed to the caller
        self.acknowledged = 0  # of those, how many the worker has been told about

    async def start(self) -> bytes:
        """Send the job; return the first audio chunk (empty when the clip is silent)."""
        accepted = await self.submit(
            "tts.job",
            {
                "engine": self.spec.engine,
                "language": self.spec.language,
                "voice_settings": self.spec.voice_settings,
                "segments": [_segment_message(segment) for segment in self.spec.segments],
            },
        )
        self.sample_rate = accepted["sample_rate"]
        return await self.next_chunk() or b""

    async def chunks(self) -> AsyncIterator[bytes]:
        while (chunk := await self.next_chunk()) is not None:
            yield chunk

    async def next_chunk(self) -> bytes | None:
        """The next audio chunk, or None once the worker says the clip is complete.

        Asking for the next chunk means the caller has written the previous ones out, so this is where the
        worker gets credit to send more (backpressure: see TTS_STREAM_WINDOW). Credit goes in batches of
        half a window, so the worker never idles for it and the channel layer carries few extra messages."""
        while not self.finished:
            if self.received - self.acknowledged >= max(1, settings.TTS_STREAM_WINDOW // 2):
                self.acknowledged = self.received
                await self.layer.send(
                    self.worker_channel, {"type": "tts.credit", "job_id": self.job_id, "consumed": self.received}
                )
            message = await self._next(settings.TTS_CHUNK_TIMEOUT)
            kind = message["type"]
            if kind == "tts.audio":
                self.received += 1
                return message["pcm"]
            if kind == "tts.done":
                self.finished = True
            if kind == "tts.error":
                self._raise(message)
        return None

    async def cancel(self) -> None:
        if self.finished:
            return
        self.finished = True
        if self.worker_channel:
            await self.layer.send(self.worker_channel, {"type": "tts.cancel", "job_id": self.job_id})
        elif self.layer is not None:  # sent, not yet accepted: the worker that takes it will drop it
            await asyncio.to_thread(workers.job_abandon, job_id=self.job_id)
