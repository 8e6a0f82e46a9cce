"""Backpressure between a stream's reader and its model worker: a reader that stalls parks its own job on the
worker (its engine pauses between sentences, holding no lock) instead of the worker racing ahead and the audio
piling up in between; other streams on the same worker go on."""
import asyncio
import threading
import time

from asgiref.sync import async_to_sync

from synthesis import heartbeats

from synthesis.dispatch import JobSpec, WorkerStream
from synthesis.frontend import plain_text_segments
from synthesis.worker import _AudioBuffer, ensure_embedded_worker

# Well over a minute of speech: hundreds of 100 ms chunks if nothing held the engine back.
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer that nobody is listening to." for n in range(60))
BUFFER_HIGH_WATER = 64 * 1024  # synthesis.worker._BUFFER_HIGH_WATER: the engine pauses above it
MAX_MESSAGE_BYTES = 32 * 1024  # synthesis.worker._MAX_MESSAGE_BYTES: chunks waiting are sent as one message


def _stream(text: str = LONG_TEXT) -> WorkerStream:
    spec = JobSpec(
        engine="espeak", language="en-US", voice_settings={"espeak_voice": "en-us"},
        segments=plain_text_segments(text, speed=1.0),
    )
    return WorkerStream(spec)


async def _until(condition, timeout=10.0):
    deadline = asyncio.get_running_loop().time() + timeout
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition never became true"
        await asyncio.sleep(0.01)


def _parked(report: dict) -> bool:
    """One report of the worker in which its one stream is parked: the sender waits for credit (only the client
    reading gives it) and the engine waits for room in the buffer (only the sender taking audio makes it)."""
    return report["waiting_for_client"] == 1 and report["engines_paused"] == 1


async def _next_heartbeat(worker, after: float) -> dict:
    """The first heartbeat the worker publishes after `after` (its heartbeat_at)."""
    def beat() -> dict | None:
        return next((info for info in heartbeats.live_workers() if info["worker_id"] == worker.worker_id), None)

    await _until(lambda: (info := beat()) is not None and info["heartbeat_at"] > after)
    return beat()


def test_a_stalled_reader_stops_the_engine_and_loses_nothing(live_voices, engine_tap, settings):
    settings.TTS_STREAM_WINDOW = 4

    async def scenario():
        stream = _stream()
        first = await stream.start()
        worker = ensure_embedded_worker()
        await _until(lambda: _parked(worker.describe()))  # both in the same report: a state that cannot move
        emitted_while_stalled = len(engine_tap.pcm)
        # Two heartbeats later, the worker still reports the stream parked, and the engine rendered nothing
        # more: it stays stopped for as long as the reader does not read (no timing involved).
        beat = await _next_heartbeat(worker, after=time.time())
        beat = await _next_heartbeat(worker, after=beat["heartbeat_at"])
        assert _parked(beat) and beat["load"] == 1
        assert len(engine_tap.pcm) == emitted_while_stalled
        rest = [chunk async for chunk in stream.chunks()]
        return first + b"".join(rest), emitted_while_stalled

    pcm, emitted_while_stalled = async_to_sync(scenario)()
    # At most: the window of messages (plus the one held back), the buffer up to its high-water mark, and the
    # sentence that crossed it.
    longest_sentence = max(engine_tap.sentence_bytes)
    assert emitted_while_stalled <= (1 + 4) * MAX_MESSAGE_BYTES + BUFFER_HIGH_WATER + longest_sentence
    assert len(engine_tap.pcm) > 10 * emitted_while_stalled  # the clip really was much longer
    assert pcm == engine_tap.pcm  # resuming delivers every sample, in order


def _until_sync(condition, timeout=10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.001)


def test_the_engine_is_reported_paused_only_while_it_cannot_render():
    """engines_paused must not count an engine the sender has just made room for: the flag goes with the room,
    not with the engine thread waking up (on a busy machine that can come much later, and the engine then
    renders another sentence)."""
    loop = asyncio.new_event_loop()
    try:
        buffer = _AudioBuffer(loop)
        buffer.put(b"\0" * MAX_MESSAGE_BYTES)
        buffer.put(b"\0" * MAX_MESSAGE_BYTES)  # at the high-water mark: the engine must wait
        engine = threading.Thread(target=buffer.wait_for_room, args=(threading.Event(),))
        engine.start()
        _until_sync(lambda: buffer.engine_waiting)
        with buffer._condition:  # while this is held, the engine thread cannot get out of its wait
            chunk, ended = loop.run_until_complete(buffer.take())
            assert len(chunk) == MAX_MESSAGE_BYTES and not ended
            assert buffer.engine_waiting is False  # room was made: not paused any more, though not yet running
        engine.join(10)
        assert not engine.is_alive() and buffer.engine_waiting is False
    finally:
        loop.close()


def test_a_stalled_reader_parks_only_its_own_stream(live_voices, engine_tap, settings):
    """One listener stops reading a long clip; other requests on the same worker are served in full meanwhile."""
    settings.TTS_STREAM_WINDOW = 2
    settings.TTS_WORKER_CAPACITY = 3

    async def whole(stream: WorkerStream) -> bytes:
        first = await stream.start()
        return first + b"".join([chunk async for chunk in stream.chunks()])

    async def scenario():
        stalled = _stream()
        await stalled.start()
        worker = ensure_embedded_worker()
        await _until(lambda: worker.describe()["engines_paused"] == 1)
        others = [await whole(_stream(f"Caller number {n} is served while another listener stalls.")) for n in range(4)]
        still_parked = worker.describe()
        await stalled.cancel()
        await _until(lambda: worker.describe()["load"] == 0)
        return others, still_parked

    others, still_parked = async_to_sync(scenario)()
    assert all(len(pcm) > 22050 for pcm in others)  # each a whole second or more of speech
    assert still_parked["waiting_for_client"] == 1 and still_parked["load"] == 1


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
        return len(engine_tap.pcm)

    rendered = async_to_sync(scenario)()
    assert len(engine_tap.pcm) == rendered  # the engine rendered nothing more after the cancel


def test_a_job_given_up_before_any_worker_took_it_is_never_started(live_voices, engine_tap, settings):
    settings.TTS_WORKER_CAPACITY = 1
    settings.TTS_JOB_ACCEPT_TIMEOUT = 5
    engine_tap.hold_after_first_chunk()

    async def whole(stream: WorkerStream) -> bytes:
        first = await stream.start()
        return first + b"".join([chunk async for chunk in stream.chunks()])

    async def scenario():
        busy = _stream()
        first = await busy.start()  # takes the worker's only slot; its engine is held
        worker = ensure_embedded_worker()
        given_up = _stream()
        starting = asyncio.ensure_future(given_up.start())
        await _until(lambda: given_up.entry)  # queued: no worker has room to take it
        assert not starting.done() and not given_up.worker_id
        starting.cancel()  # its client went away
        await given_up.cancel()
        engine_tap.release()
        spoken = first + b"".join([chunk async for chunk in busy.chunks()])
        # Had the worker served the abandoned job for nobody, it would hold the only slot (waiting for credit
        # that never comes) and this one would get no worker in time.
        after = await whole(_stream())
        return spoken, after, worker.describe()["jobs_started"]

    spoken, after, started = async_to_sync(scenario)()
    assert spoken and after
    assert started == 2  # the busy job and the last one: the abandoned job never reached an engine


def test_cancelling_an_xtts_stream_frees_its_batch_slot_at_once(live_voices, xtts_enabled, tmp_path):
    from synthesis.engines import load_engine
    from tests.factories import voice_like
    from voices.audio import encode_wav

    clip = tmp_path / "reference.wav"
    clip.write_bytes(encode_wav(voice_like(4.0), 22050))

    async def scenario():
        stream = WorkerStream(JobSpec(
            engine="xtts", language="en", voice_settings={"reference_audio": str(clip)},
            segments=plain_text_segments(LONG_TEXT, speed=1.0),
        ))
        await stream.start()
        engine = load_engine("xtts").engine
        # Between two sentences (the last window of one with HiFi-GAN, the next not yet submitted) no slot is
        # held; a sentence of this stream holds one soon enough.
        await _until(lambda: engine.stats()["slots_in_use"] == 1, timeout=30)
        await stream.cancel()
        worker = ensure_embedded_worker()
        await _until(lambda: engine.stats()["slots_in_use"] == 0 and worker.describe()["load"] == 0, timeout=30)

    async_to_sync(scenario)()
