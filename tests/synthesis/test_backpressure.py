"""Backpressure between a stream's reader and its model worker: a reader that stalls holds its job on the
worker (the engine stops) instead of the worker racing ahead and the audio piling up in between."""
import asyncio

from asgiref.sync import async_to_sync

from synthesis.dispatch import JobSpec, WorkerStream
from synthesis.frontend import plain_text_segments
from synthesis.worker import ensure_embedded_worker

# Well over a minute of speech: hundreds of 100 ms chunks if nothing held the engine back.
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer that nobody is listening to." for n in range(60))
PENDING_CHUNKS = 8  # synthesis.worker._PENDING_CHUNKS: between the engine thread and the event loop
MAX_MESSAGE_BYTES = 32 * 1024  # synthesis.worker._MAX_MESSAGE_BYTES: chunks waiting are sent as one message


def _stream() -> WorkerStream:
    spec = JobSpec(
        engine="espeak", language="en-US", voice_settings={"espeak_voice": "en-us"},
        segments=plain_text_segments(LONG_TEXT, speed=1.0),
    )
    return WorkerStream(spec)


async def _until(condition, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def test_a_stalled_reader_stops_the_engine_and_loses_nothing(live_voices, engine_tap, settings):
    settings.TTS_STREAM_WINDOW = 4

    async def scenario():
        stream = _stream()
        first = await stream.start()
        worker = ensure_embedded_worker()
        await _until(lambda: worker.describe()["waiting_for_client"] == 1)
        emitted_while_stalled = len(engine_tap.pcm)
        await asyncio.sleep(0.3)  # the engine would emit dozens of chunks in this time if nothing held it
        assert len(engine_tap.pcm) == emitted_while_stalled
        assert not engine_tap.finished.is_set()
        rest = [chunk async for chunk in stream.chunks()]
        return first + b"".join(rest), emitted_while_stalled

    pcm, emitted_while_stalled = async_to_sync(scenario)()
    # At most: the window of messages (plus the one held back), the pending queue, the chunk in the engine's hand.
    largest_chunk = max(len(chunk) for chunk in engine_tap.chunks)
    assert emitted_while_stalled <= (1 + 4) * MAX_MESSAGE_BYTES + (PENDING_CHUNKS + 1) * largest_chunk
    assert len(engine_tap.pcm) > 10 * emitted_while_stalled  # the clip really was much longer
    assert pcm == engine_tap.pcm  # resuming delivers every sample, in order


def test_a_reader_that_keeps_up_is_never_held(live_voices, engine_tap, settings):
    settings.TTS_STREAM_WINDOW = 1  # the tightest window still streams the whole clip

    async def scenario():
        stream = _stream()
        first = await stream.start()
        return first + b"".join([chunk async for chunk in stream.chunks()])

    assert async_to_sync(scenario)() == engine_tap.pcm


def test_cancelling_a_held_stream_frees_the_worker(live_voices, engine_tap, settings):
    settings.TTS_STREAM_WINDOW = 2

    async def scenario():
        stream = _stream()
        await stream.start()
        worker = ensure_embedded_worker()
        await _until(lambda: worker.describe()["waiting_for_client"] == 1)
        await stream.cancel()
        await _until(lambda: worker.describe()["load"] == 0)

    async_to_sync(scenario)()
    assert engine_tap.finished.wait(5) and engine_tap.stopped_early


def test_a_job_given_up_before_any_worker_took_it_is_dropped_by_the_worker(live_voices, engine_tap, settings):
    settings.TTS_WORKER_CAPACITY = 1
    settings.TTS_JOB_ACCEPT_TIMEOUT = 5
    engine_tap.hold_after_first_chunk()

    async def whole(stream: WorkerStream) -> bytes:
        first = await stream.start()
        return first + b"".join([chunk async for chunk in stream.chunks()])

    async def scenario():
        busy = _stream()
        first = await busy.start()  # takes the worker's only slot; its engine is held
        given_up = _stream()
        starting = asyncio.ensure_future(given_up.start())
        await asyncio.sleep(0.2)  # sent, and queued: no worker has room to accept it
        assert not starting.done() and not given_up.worker_channel
        starting.cancel()  # its client went away
        await given_up.cancel()
        engine_tap.release()
        spoken = first + b"".join([chunk async for chunk in busy.chunks()])
        # The worker takes jobs in order: had it served the abandoned one for nobody, that job would hold its
        # only slot (waiting for credit that never comes) and this one would get no worker in time.
        return spoken, await whole(_stream())

    spoken, after = async_to_sync(scenario)()
    assert spoken and after
    assert engine_tap.stopped_early  # the abandoned job's engine was stopped at its first chunk
