"""Streamed text on /v1/stream: `text` pieces as an LLM produces them are spoken sentence by sentence."""
import asyncio
import json
import random
import uuid

import pytest
from channels.testing import WebsocketCommunicator

from synthesis.consumers import MAX_QUEUED
from tenants.models import UsageRecord
from tests.factories import TenantFactory, issue_key
from tests.synthesis.test_websocket import (  # key and tenant: fixtures (committed rows)
    TIMEOUT, _application, _closed_with_error, _open, _say, _synthesize, _utterance, key, run, tenant,
)


LONG_SENTENCE = "This sentence keeps the synthesizer busy for a while, " * 4 + "and then it ends."


def _pieces(text: str, seed: int = 7) -> list[str]:
    """The text cut into pieces of 1 to 3 characters, as an LLM's tokens arrive."""
    rng, pieces, i = random.Random(seed), [], 0
    while i < len(text):
        size = rng.randint(1, 3)
        pieces.append(text[i:i + size])
        i += size
    return pieces


async def _stream_text(ws: WebsocketCommunicator, text: str, **fields) -> None:
    for n, piece in enumerate(_pieces(text)):
        await ws.send_json_to({"type": "text", "text": piece, **(fields if n == 0 else {})})


async def _utterances(ws: WebsocketCommunicator, count: int) -> list[tuple[dict, bytes, dict]]:
    spoken = []
    for _ in range(count):
        start, frames, end = await _utterance(ws)
        spoken.append((start, b"".join(frames), end))
    return spoken


def _as_long(audio: bytes, key: str, text: str, **fields) -> bool:
    """Whether `audio` lasts as long as `text` synthesized on its own: within 1% or 20 ms (eSpeak's output varies a
    little run to run, and carries some state from one utterance to the next), where a word missing or said twice
    is far more."""
    _, frames, done = run(_say, key, text=text, **fields)
    assert done["type"] == "done"
    alone = len(b"".join(frames))
    return abs(len(audio) - alone) <= max(alone / 100, 2 * 22050 * 0.02)


def test_pieces_of_a_few_characters_are_spoken_sentence_by_sentence_in_order(tenant, key):
    sentences = ["Thanks for calling CallWaiting.", "Your order shipped on Monday!", "Is there anything else?",
                 "Have a good day."]

    async def scenario():
        ws = await _open(key)
        await _stream_text(ws, " ".join(sentences) + " ")
        await ws.send_json_to({"type": "flush"})
        spoken = await _utterances(ws, len(sentences))
        await ws.disconnect(timeout=TIMEOUT)
        return spoken

    spoken = run(scenario)
    for (start, audio, done), sentence in zip(spoken, sentences):
        assert done == {"type": "done", "request_id": start["request_id"], "characters": len(sentence),
                        "audio_seconds": pytest.approx(len(audio) / 2 / 22050, abs=1e-3)}
        assert _as_long(audio, key, sentence)  # the whole sentence, nothing missing or repeated
    assert len({start["request_id"] for start, _, _ in spoken}) == len(sentences)  # the server's ids, one each
    rows = UsageRecord.objects.filter(request_id__in=[start["request_id"] for start, _, _ in spoken])
    assert sorted(row.characters for row in rows) == sorted(map(len, sentences))
    assert {row.status for row in rows} == {"success"}


def test_decimals_abbreviations_and_ellipses_do_not_end_a_sentence(key):
    first = "Dr. Smith paid 3.5 dollars, e.g. for the U.S. trip... and it was worth it."
    second = "Then he went home."

    async def scenario():
        ws = await _open(key)
        await _stream_text(ws, f"{first} {second}")
        await ws.send_json_to({"type": "flush"})
        spoken = await _utterances(ws, 2)
        await ws.disconnect(timeout=TIMEOUT)
        return spoken

    (_, first_audio, first_done), (_, second_audio, _) = run(scenario)
    assert first_done["characters"] == len(first)
    assert _as_long(first_audio, key, first) and _as_long(second_audio, key, second)


def test_a_period_at_the_end_of_a_piece_waits_for_the_next_one(key):
    async def scenario():
        ws = await _open(key)
        await ws.send_json_to({"type": "text", "text": "It costs 3."})  # maybe the end, maybe "3.5"
        await ws.send_json_to({"type": "text", "text": "5 dollars."})
        await ws.send_json_to({"type": "flush"})
        (start, audio, done), = await _utterances(ws, 1)
        await ws.disconnect(timeout=TIMEOUT)
        return audio, done

    audio, done = run(scenario)
    assert done["characters"] == len("It costs 3.5 dollars.") and _as_long(audio, key, "It costs 3.5 dollars.")


def test_flush_speaks_a_partial_sentence_and_the_connection_goes_on(key):
    async def scenario():
        ws = await _open(key)
        await _stream_text(ws, "Please hold while I")
        await ws.send_json_to({"type": "flush"})
        (_, partial, _), = await _utterances(ws, 1)
        await ws.send_json_to({"type": "text", "text": "Back again.", "flush": True})  # flush on the piece itself
        (_, again, _), = await _utterances(ws, 1)
        await ws.disconnect(timeout=TIMEOUT)
        return partial, again

    partial, again = run(scenario)
    assert _as_long(partial, key, "Please hold while I") and _as_long(again, key, "Back again.")


def test_a_sentence_is_spoken_with_the_fields_in_effect_where_it_starts(key):
    async def scenario():
        ws = await _open(key)
        await ws.send_json_to({"type": "text", "text": "Slow and", "speed": 0.5, "format": "wav"})
        await ws.send_json_to({"type": "text", "text": " steady. Fa", "speed": 2.0})  # from the next sentence on
        await ws.send_json_to({"type": "text", "text": "st now."})  # fields are kept until changed
        await ws.send_json_to({"type": "flush"})
        spoken = await _utterances(ws, 2)
        await ws.disconnect(timeout=TIMEOUT)
        return spoken

    (slow_start, slow, _), (fast_start, fast, _) = run(scenario)
    assert slow_start["format"] == fast_start["format"] == "wav"
    assert _as_long(slow, key, "Slow and steady.", speed=0.5, format="wav")
    assert _as_long(fast, key, "Fast now.", speed=2.0, format="wav")


def test_a_long_run_without_a_sentence_end_is_spoken_in_bounded_parts(key, settings):
    settings.TTS_STREAM_SENTENCE_MAX_CHARS = 60
    words = "one two three, four five six, seven eight nine, ten eleven twelve, " * 3

    async def scenario():
        ws = await _open(key)
        await _stream_text(ws, words)
        await ws.send_json_to({"type": "flush"})
        spoken = []
        while sum(done["characters"] for _, _, done in spoken) + len(spoken) - 1 < len(words.strip()):
            spoken += await _utterances(ws, 1)
        await ws.disconnect(timeout=TIMEOUT)
        return spoken

    spoken = run(scenario)
    assert len(spoken) >= 4 and all(done["characters"] <= 60 for _, _, done in spoken)


def test_cancel_drops_the_buffered_text_and_the_queued_sentences_and_stops_the_audio(tenant, key, engine_tap):
    engine_tap.hold_after_first_chunk()
    next_id = str(uuid.uuid4())

    async def scenario():
        ws = await _open(key)
        try:
            await _stream_text(ws, f"{LONG_SENTENCE} A queued sentence. And one still being writ")
            speaking = await ws.receive_json_from(TIMEOUT)
            assert speaking["type"] == "start" and isinstance(await ws.receive_from(TIMEOUT), bytes)
            await ws.send_json_to({"type": "cancel"})
            answer = await ws.receive_json_from(TIMEOUT)  # a text frame: no more audio came first
        finally:
            engine_tap.release()
        assert answer == {"type": "cancelled", "request_id": speaking["request_id"]}
        # Nothing is left to flush, and nothing queued is spoken: what comes next is the new utterance.
        await ws.send_json_to({"type": "flush"})
        await _synthesize(ws, text="The caller asked something else.", request_id=next_id)
        start, _, done = await _utterance(ws)
        await ws.disconnect(timeout=TIMEOUT)
        return speaking, start, done

    speaking, start, done = run(scenario)
    assert start["request_id"] == done["request_id"] == next_id
    assert engine_tap.stopped_early
    rows = UsageRecord.objects.filter(tenant=tenant)
    assert {str(row.request_id): row.status for row in rows} == {
        speaking["request_id"]: "client_disconnected", next_id: "success",
    }


def test_more_than_sixteen_sentences_waiting_get_4429(key, engine_tap):
    engine_tap.hold_after_first_chunk()

    async def scenario():
        ws = await _open(key)
        try:
            await ws.send_json_to({"type": "text", "text": LONG_SENTENCE + "\n"})
            assert (await ws.receive_json_from(TIMEOUT))["type"] == "start"
            assert isinstance(await ws.receive_from(TIMEOUT), bytes)
            text = " ".join(f"Sentence {n}." for n in range(MAX_QUEUED + 1))
            await ws.send_json_to({"type": "text", "text": text, "flush": True})
            return await _closed_with_error(ws, 4429)
        finally:
            engine_tap.release()

    assert run(scenario) == "too_many_queued"


@pytest.mark.parametrize(
    "message, close_code, code",
    [
        ({"type": "text", "text": "Hi.", "speed": 9}, 4400, "invalid_request"),
        ({"type": "text", "text": "Hi.", "format": "ogg"}, 4400, "invalid_request"),
        ({"type": "text", "text": "Hi.", "speed": "nan"}, 4400, "invalid_request"),
        ({"type": "text"}, 4400, "invalid_request"),
        ({"type": "text", "text": "Hi.", "flush": "maybe"}, 4400, "invalid_request"),
        ({"type": "text", "text": "Hi.", "ssml": "<speak>Hi.</speak>"}, 4400, "invalid_request"),
        ({"type": "text", "text": "Hi.", "request_id": str(uuid.uuid4())}, 4400, "invalid_request"),
        ({"type": "text", "text": "x" * 5001}, 4413, "text_too_long"),
        ({"type": "text", "text": "Hi.", "voice_id": "no_such_voice", "flush": True}, 4404, "voice_not_found"),
        ({"type": "text", "text": "Hi.", "language": "fr", "flush": True}, 4422, "unsupported_language"),
    ],
)
def test_a_text_piece_with_bad_fields_gets_the_error_shape(key, message, close_code, code):
    async def scenario():
        ws = await _open(key)
        await ws.send_json_to(message)
        return await _closed_with_error(ws, close_code)

    assert run(scenario) == code


def test_text_with_nothing_to_say_makes_no_utterance(tenant, key):
    async def scenario():
        ws = await _open(key)
        await ws.send_json_to({"type": "text", "text": "\n\n---\n\n... "})
        await ws.send_json_to({"type": "flush"})
        await ws.send_json_to({"type": "text", "text": "Real words.", "flush": True})
        (start, _, _), = await _utterances(ws, 1)
        await ws.disconnect(timeout=TIMEOUT)
        return start

    start = run(scenario)
    assert [str(row.request_id) for row in UsageRecord.objects.filter(tenant=tenant)] == [start["request_id"]]


# --- the next sentence made while the current one is on its way ---------------------------------------------------
class HeldDelivery:
    """Stands in for daphne's Delivery (callwaiting.middleware): the client has received nothing until the test
    says so, as a listener still playing the current sentence."""

    def __init__(self):
        self.sent = self.delivered = 0
        self.waiting = asyncio.Event()
        self.release = asyncio.Event()

    def observe(self) -> bool:
        return True

    async def received(self, timeout: float) -> bool:
        self.waiting.set()
        await self.release.wait()
        self.delivered = self.sent
        return True


async def _open_held(key: str) -> tuple[WebsocketCommunicator, HeldDelivery]:
    ws = WebsocketCommunicator(_application(), "/v1/stream", headers=[(b"authorization", f"Bearer {key}".encode())])
    delivery = ws.scope["callwaiting.delivery"] = HeldDelivery()
    assert (await ws.connect(TIMEOUT))[0]
    return ws, delivery


async def _until(condition) -> None:
    """Wait for a state the code reports (the engine's calls), up to TIMEOUT."""
    async with asyncio.timeout(TIMEOUT):
        while not condition():
            await asyncio.sleep(0.005)


async def _rest(ws: WebsocketCommunicator) -> tuple[bytes, dict]:
    """The audio of an utterance whose start frame was read, and the frame that ended it."""
    frames = []
    while isinstance(frame := await ws.receive_from(TIMEOUT), bytes):
        frames.append(frame)
    return b"".join(frames), json.loads(frame)


async def _first_on_its_way(ws: WebsocketCommunicator, delivery: HeldDelivery, engine_tap) -> dict:
    """Two sentences; returns the first's start frame once all its audio is sent but not yet received, and the
    second's job has run meanwhile."""
    await ws.send_json_to({"type": "text", "text": "First sentence here. Second one follows.", "flush": True})
    start = await ws.receive_json_from(TIMEOUT)
    await asyncio.wait_for(delivery.waiting.wait(), TIMEOUT)
    await _until(lambda: len(engine_tap.sentence_bytes) == 2)
    return start


def test_the_next_sentence_is_made_while_the_current_one_reaches_the_listener(tenant, key, engine_tap):
    async def scenario():
        ws, delivery = await _open_held(key)
        first_start = await _first_on_its_way(ws, delivery, engine_tap)
        delivery.release.set()
        first, first_done = await _rest(ws)
        (second_start, second, second_done), = await _utterances(ws, 1)
        await ws.disconnect(timeout=TIMEOUT)
        return first_start, first, first_done, second_start, second, second_done

    first_start, first, first_done, second_start, second, second_done = run(scenario)
    assert first_done["request_id"] == first_start["request_id"] != second_start["request_id"]
    assert _as_long(first, key, "First sentence here.") and _as_long(second, key, "Second one follows.")
    rows = UsageRecord.objects.filter(tenant=tenant, request_id__in=[first_done["request_id"], second_done["request_id"]])
    assert [row.status for row in rows] == ["success", "success"]


def test_a_cancel_drops_the_sentence_made_ahead_and_bills_it_no_audio(tenant, key, engine_tap):
    async def scenario():
        ws, delivery = await _open_held(key)
        first_start = await _first_on_its_way(ws, delivery, engine_tap)
        await ws.send_json_to({"type": "cancel"})
        _, answer = await _rest(ws)  # the first one's audio, then the answer: nothing of the second
        await _synthesize(ws, text="Something else.")
        delivery.release.set()
        (start, _, _), = await _utterances(ws, 1)
        await ws.disconnect(timeout=TIMEOUT)
        return first_start, answer, start

    first_start, answer, start = run(scenario)
    assert answer == {"type": "cancelled", "request_id": first_start["request_id"]}
    rows = {str(row.request_id): row for row in UsageRecord.objects.filter(tenant=tenant)}
    ahead = next(row for request_id, row in rows.items() if request_id not in (first_start["request_id"], start["request_id"]))
    assert rows[first_start["request_id"]].status == "client_disconnected" and rows[start["request_id"]].status == "success"
    assert ahead.status == "client_disconnected" and ahead.audio_seconds == 0
    assert ahead.characters == len("Second one follows.")


def test_a_tenant_with_one_stream_still_hears_every_sentence(live_voices, engine_tap):
    """The next sentence cannot start ahead while the current one holds the tenant's only stream: it starts at
    its turn instead, and is counted once against the rate limit."""
    tenant = TenantFactory(max_concurrent_streams=1, requests_per_minute=2)
    key = issue_key(tenant)

    async def scenario():
        ws, delivery = await _open_held(key)
        await ws.send_json_to({"type": "text", "text": "First sentence here. Second one follows.", "flush": True})
        await ws.receive_json_from(TIMEOUT)
        await asyncio.wait_for(delivery.waiting.wait(), TIMEOUT)
        delivery.release.set()
        await _rest(ws)
        (_, second, done), = await _utterances(ws, 1)
        await ws.disconnect(timeout=TIMEOUT)
        return second, done

    second, done = run(scenario)
    assert done["type"] == "done" and second
    assert list(UsageRecord.objects.filter(tenant=tenant).values_list("status", flat=True)) == ["success"] * 2


def test_a_sentence_made_ahead_keeps_its_worker_job_alive_until_its_turn(key, engine_tap, settings, monkeypatch):
    """Its job waits on its credit window while the listener still receives the current sentence (socket buffers
    hold many seconds): the worker hears keep-alives meanwhile, else it would give the job up as abandoned."""
    from synthesis.dispatch import WorkerStream

    settings.TTS_CLIENT_STALL_TIMEOUT = 0.03  # a keep-alive every 10 ms
    keep_alives = []
    keep_alive = WorkerStream.keep_alive

    async def counted(self):
        keep_alives.append(self.job_id)
        await keep_alive(self)

    monkeypatch.setattr(WorkerStream, "keep_alive", counted)

    async def scenario():
        ws, delivery = await _open_held(key)
        first_start = await _first_on_its_way(ws, delivery, engine_tap)
        await _until(lambda: len(keep_alives) >= 3)
        delivery.release.set()
        _, first_done = await _rest(ws)
        (_, second, _), = await _utterances(ws, 1)
        await ws.disconnect(timeout=TIMEOUT)
        return first_start, first_done, second

    first_start, first_done, second = run(scenario)
    assert first_done["request_id"] == first_start["request_id"] and second
    assert len(set(keep_alives)) == 1  # the one job made ahead, and no other
