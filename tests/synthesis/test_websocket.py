"""The WebSocket API /v1/stream, driven through the real ASGI application as daphne serves it."""
import asyncio
import json
import struct
import threading
import uuid

import pytest
from asgiref.sync import async_to_sync
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator

from synthesis import heartbeats
from synthesis.audio import UNKNOWN_SIZE
from synthesis.consumers import MAX_QUEUED
from synthesis.services import SynthesisSession
from tenants.models import UsageRecord
from tenants.services import api_key_issue, api_key_revoke
from tests.factories import TenantFactory, issue_key
from tests.synthesis.hostile_input import HOSTILE_FIELDS

TIMEOUT = 20
LONG_TEXT = " ".join(["This sentence keeps the synthesizer busy for a while."] * 20)


@pytest.fixture
def tenant(live_voices):
    """Committed rows: the application reads them from its own threads (also the fixture of the other
    WebSocket test files, which import it)."""
    return TenantFactory()


@pytest.fixture
def key(tenant) -> str:
    return issue_key(tenant)


def run(scenario, *args, **kwargs):
    return async_to_sync(scenario)(*args, **kwargs)


def _application():
    from callwaiting.asgi import application

    return application


async def _open(key: str | None, path: str = "/v1/stream") -> WebsocketCommunicator:
    headers = [(b"authorization", f"Bearer {key}".encode())] if key else []
    ws = WebsocketCommunicator(_application(), path, headers=headers)
    connected, _ = await ws.connect(TIMEOUT)
    assert connected
    return ws


async def _closed_with_error(ws: WebsocketCommunicator, close_code: int) -> str:
    """The error frame in the API's one shape, then the close; returns the error code."""
    frame = await ws.receive_json_from(TIMEOUT)
    assert set(frame) == {"error"} and set(frame["error"]) == {"code", "message"}, frame
    assert frame["error"]["message"]
    assert await ws.receive_output(TIMEOUT) == {"type": "websocket.close", "code": close_code}
    await ws.disconnect(timeout=TIMEOUT)
    return frame["error"]["code"]


async def _utterance(ws: WebsocketCommunicator) -> tuple[dict, list[bytes], dict]:
    """start frame, audio frames, and the frame that ended them."""
    start = await ws.receive_json_from(TIMEOUT)
    assert start["type"] == "start", start
    frames = []
    while isinstance(frame := await ws.receive_from(TIMEOUT), bytes):
        frames.append(frame)
    return start, frames, json.loads(frame)


async def _synthesize(ws: WebsocketCommunicator, **fields) -> None:
    await ws.send_json_to({"type": "synthesize", **fields})


async def _say(key: str, **fields) -> tuple[dict, list[bytes], dict]:
    ws = await _open(key)
    await _synthesize(ws, **fields)
    utterance = await _utterance(ws)
    await ws.disconnect(timeout=TIMEOUT)
    return utterance


async def _refused(key: str, close_code: int, *messages) -> str:
    """Send the messages (dicts as JSON, str and bytes as they are); the error code the server closes with."""
    ws = await _open(key)
    for message in messages:
        if isinstance(message, dict):
            await ws.send_json_to(message)
        else:
            await ws.send_to(**{"bytes_data" if isinstance(message, bytes) else "text_data": message})
    return await _closed_with_error(ws, close_code)


async def _wait_until_held(engine_tap) -> None:
    assert await asyncio.to_thread(engine_tap.held.wait, TIMEOUT)


def _usage(request_id: str) -> UsageRecord:
    return UsageRecord.objects.get(request_id=request_id)


# --- the handshake ----------------------------------------------------------------------------------------------
def test_missing_and_invalid_keys_get_4401(live_voices):
    assert run(_refused, None, 4401) == "authentication_required"
    assert run(_refused, "sk_test_" + "a" * 44, 4401) == "invalid_api_key"
    assert run(_refused, "not-a-key", 4401) == "malformed_api_key"


def test_revoked_key_gets_4401(tenant):
    issued = api_key_issue(tenant=tenant, kind="test", scopes=["synthesize"])
    api_key_revoke(api_key=issued.api_key)
    assert run(_refused, issued.plaintext, 4401) == "api_key_revoked"


def test_a_key_in_the_query_string_is_not_accepted(key):
    async def scenario():
        ws = WebsocketCommunicator(_application(), f"/v1/stream?api_key={key}")
        assert (await ws.connect(TIMEOUT))[0]
        return await _closed_with_error(ws, 4401)

    assert run(scenario) == "authentication_required"


def test_key_without_the_synthesize_scope_gets_4403(tenant):
    assert run(_refused, issue_key(tenant, scopes=["voices"]), 4403) == "missing_scope"


def test_a_key_revoked_mid_connection_is_refused_at_the_next_utterance(tenant):
    issued = api_key_issue(tenant=tenant, kind="test", scopes=["synthesize"])

    async def scenario():
        ws = await _open(issued.plaintext)
        await _synthesize(ws, text="Still valid.")
        assert (await _utterance(ws))[2]["type"] == "done"
        await database_sync_to_async(api_key_revoke)(api_key=issued.api_key)
        await _synthesize(ws, text="Not any more.")
        return await _closed_with_error(ws, 4401)

    assert run(scenario) == "api_key_revoked"


def test_an_unknown_path_is_refused_cleanly(key):
    async def scenario():
        ws = await _open(key, "/v1/nowhere")
        return await _closed_with_error(ws, 4404)

    assert run(scenario) == "not_found"


# --- speech -----------------------------------------------------------------------------------------------------
def test_an_utterance_streams_pcm_frames_and_is_billed_once(tenant, key, engine_tap):
    request_id = str(uuid.uuid4())
    start, frames, done = run(_say, key, text="Hello from CallWaiting", request_id=request_id)
    assert start == {
        "type": "start", "request_id": request_id, "voice_id": "default", "sample_rate": 22050, "format": "pcm",
        "worker_id": start["worker_id"],
    }
    assert start["worker_id"]
    pcm = b"".join(frames)
    assert pcm == engine_tap.pcm and len(pcm) > 22050 and len(pcm) % 2 == 0  # whole 16-bit samples, > 0.5 s
    assert done == {
        "type": "done", "request_id": request_id, "characters": len("Hello from CallWaiting"),
        "audio_seconds": pytest.approx(len(pcm) / 2 / 22050, abs=1e-3),
    }
    row = _usage(request_id)
    assert row.status == "success" and row.tenant == tenant and row.characters == done["characters"]
    assert row.audio_seconds == pytest.approx(done["audio_seconds"], abs=1e-3)


def test_audio_leaves_before_the_utterance_is_finished(key, engine_tap):
    engine_tap.hold_after_first_chunk()

    async def scenario():
        ws = await _open(key)
        await _synthesize(ws, text=LONG_TEXT)
        try:
            await ws.receive_json_from(TIMEOUT)
            first = await ws.receive_from(TIMEOUT)
            assert isinstance(first, bytes) and first and not engine_tap.finished.is_set()
        finally:
            engine_tap.release()
        while isinstance(await ws.receive_from(TIMEOUT), bytes):
            pass
        await ws.disconnect(timeout=TIMEOUT)

    run(scenario)


def test_wav_format_starts_with_a_streaming_wav_header(key, engine_tap):
    start, frames, done = run(_say, key, text="A file header please", format="wav")
    assert start["format"] == "wav"
    body = b"".join(frames)
    assert frames[0][:4] == b"RIFF" and body[8:16] == b"WAVEfmt " and body[36:40] == b"data"
    assert struct.unpack("<I", body[24:28])[0] == 22050 and struct.unpack("<I", body[40:44])[0] == UNKNOWN_SIZE
    assert body[44:] == engine_tap.pcm
    assert done["audio_seconds"] == pytest.approx(len(body[44:]) / 2 / 22050, abs=1e-3)


def test_utterances_on_one_connection_are_served_in_order(key):
    first_id, second_id = str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario():
        ws = await _open(key)
        await _synthesize(ws, text="First sentence, a little longer than the second.", request_id=first_id)
        await _synthesize(ws, text="Second.", request_id=second_id)
        first, second = await _utterance(ws), await _utterance(ws)
        await ws.disconnect(timeout=TIMEOUT)
        return first, second

    (start_1, frames_1, done_1), (start_2, frames_2, done_2) = run(scenario)
    assert [start_1["request_id"], done_1["request_id"]] == [first_id, first_id]
    assert [start_2["request_id"], done_2["request_id"]] == [second_id, second_id]
    assert done_1["type"] == done_2["type"] == "done" and frames_1 and frames_2
    assert done_1["audio_seconds"] > done_2["audio_seconds"]
    assert _usage(first_id).status == _usage(second_id).status == "success"


def test_the_same_request_id_twice_is_billed_once(tenant, key):
    request_id = str(uuid.uuid4())

    async def scenario():
        ws = await _open(key)
        for _ in range(2):
            await _synthesize(ws, text="Retry me", request_id=request_id)
            assert (await _utterance(ws))[2]["type"] == "done"
        await ws.disconnect(timeout=TIMEOUT)

    run(scenario)
    assert UsageRecord.objects.filter(tenant=tenant).count() == 1


# --- errors -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "message, code",
    [
        ('{"type": "synthesize", "text": "hi"', "malformed_request"),
        ('["synthesize"]', "malformed_request"),
        (b"\x00\x01 audio from the client?", "binary_frame"),
        ({"text": "no type"}, "unknown_message_type"),
        ({"type": "speak", "text": "hi"}, "unknown_message_type"),
        ({"type": "synthesize", "text": "hi", "speed": 9}, "invalid_request"),
        ({"type": "synthesize", "text": "hi", "ssml": "<speak>hi</speak>"}, "invalid_request"),
        ({"type": "synthesize", "text": "hi", "format": "ogg"}, "invalid_request"),
        ({"type": "synthesize", "text": "hi", "format": "opus", "sample_rate": 22050}, "invalid_request"),
        ({"type": "synthesize", "text": "hi", "request_id": "not-a-uuid"}, "invalid_request_id"),
        ({"type": "synthesize", "text": ""}, "empty_text"),
        ({"type": "synthesize", "ssml": "<speak>unclosed"}, "invalid_ssml"),
    ],
)
def test_bad_frames_and_fields_get_4400(key, message, code):
    assert run(_refused, key, 4400, message) == code


@pytest.mark.parametrize(
    "fields, close_code, code",
    [
        ({"text": "hi", "voice_id": "no_such_voice"}, 4404, "voice_not_found"),
        ({"text": "x" * 5001}, 4413, "text_too_long"),
        ({"text": "hi", "language": "fr"}, 4422, "unsupported_language"),
        ({"text": "hi", "voice_id": "naija_female"}, 4503, "voice_unavailable"),
    ],
)
def test_refused_requests_close_with_the_rest_status_and_are_recorded(key, fields, close_code, code):
    request_id = str(uuid.uuid4())
    assert run(_refused, key, close_code, {"type": "synthesize", "request_id": request_id, **fields}) == code
    row = _usage(request_id)
    assert row.status == "error" and row.error_code == code


@pytest.mark.parametrize("fields, code", HOSTILE_FIELDS)
def test_hostile_values_get_4400_never_4500(key, fields, code):
    request_id = str(uuid.uuid4())
    assert run(_refused, key, 4400, {"type": "synthesize", "request_id": request_id, **fields}) == code
    assert _usage(request_id).error_code == code


def test_a_frame_nested_too_deeply_gets_4400(key):
    assert run(_refused, key, 4400, "[" * 100_000 + "]" * 100_000) == "malformed_request"


def test_a_nan_speed_in_json_gets_4400(key):
    frame = '{"type": "synthesize", "text": "hi", "speed": NaN}'  # Python's json module reads NaN
    assert run(_refused, key, 4400, frame) == "invalid_request"


def test_an_invalid_field_is_recorded_like_rest(key):
    request_id = str(uuid.uuid4())
    run(_refused, key, 4400, {"type": "synthesize", "text": "hi", "speed": 9, "request_id": request_id})
    row = _usage(request_id)
    assert row.status == "error" and row.error_code == "invalid_request"


def test_monthly_quota_gets_4402(live_voices):
    key = issue_key(TenantFactory(monthly_character_quota=30))

    async def scenario():
        ws = await _open(key)
        await _synthesize(ws, text="x" * 20)
        assert (await _utterance(ws))[2]["type"] == "done"
        await _synthesize(ws, text="y" * 11)
        return await _closed_with_error(ws, 4402)

    assert run(scenario) == "quota_exceeded"


def test_rate_limit_gets_4429(live_voices):
    key = issue_key(TenantFactory(requests_per_minute=2))

    async def scenario():
        ws = await _open(key)
        for text in ("One.", "Two."):
            await _synthesize(ws, text=text)
            assert (await _utterance(ws))[2]["type"] == "done"
        await _synthesize(ws, text="Three is one too many.")
        return await _closed_with_error(ws, 4429)

    assert run(scenario) == "rate_limited"


def test_streams_beyond_the_tenant_limit_get_4429(live_voices, engine_tap):
    key = issue_key(TenantFactory(max_concurrent_streams=1))
    engine_tap.hold_after_first_chunk()

    async def scenario():
        busy = await _open(key)
        await _synthesize(busy, text=LONG_TEXT)
        await _wait_until_held(engine_tap)
        try:
            code = await _refused(key, 4429, {"type": "synthesize", "text": "Me too."})
        finally:
            engine_tap.release()
        assert (await _utterance(busy))[2]["type"] == "done"
        await busy.disconnect(timeout=TIMEOUT)
        return code

    assert run(scenario) == "too_many_streams"


def test_more_than_sixteen_queued_utterances_get_4429(key, engine_tap):
    engine_tap.hold_after_first_chunk()
    speaking_id = str(uuid.uuid4())

    async def scenario():
        ws = await _open(key)
        try:
            await _synthesize(ws, text=LONG_TEXT, request_id=speaking_id)
            assert (await ws.receive_json_from(TIMEOUT))["type"] == "start"
            assert isinstance(await ws.receive_from(TIMEOUT), bytes)
            for n in range(MAX_QUEUED + 1):
                await _synthesize(ws, text=f"Sentence {n}.")
            return await _closed_with_error(ws, 4429)
        finally:
            engine_tap.release()

    assert run(scenario) == "too_many_queued"
    assert _usage(speaking_id).status == "client_disconnected"


def test_a_worker_dying_mid_stream_gets_worker_lost_and_4503(key, engine_tap, monkeypatch):
    engine_tap.hold_after_first_chunk()
    request_id = str(uuid.uuid4())

    async def scenario():
        ws = await _open(key)
        try:
            await _synthesize(ws, text="A sentence the worker will not live to finish.", request_id=request_id)
            assert (await ws.receive_json_from(TIMEOUT))["type"] == "start"
            assert isinstance(await ws.receive_from(TIMEOUT), bytes)
            monkeypatch.setattr(heartbeats, "worker_alive", lambda worker_id: False)  # its heartbeat stops
            return await _closed_with_error(ws, 4503)
        finally:
            engine_tap.release()

    assert run(scenario) == "worker_lost"
    row = _usage(request_id)
    assert row.status == "error" and row.error_code == "worker_lost"


# --- barge-in and going away ------------------------------------------------------------------------------------
def test_cancel_stops_the_utterance_at_once_and_drops_the_queued_ones(key, engine_tap):
    engine_tap.hold_after_first_chunk()
    speaking_id, queued_id, next_id = str(uuid.uuid4()), str(uuid.uuid4()), str(uuid.uuid4())

    async def scenario():
        ws = await _open(key)
        try:
            await _synthesize(ws, text=LONG_TEXT * 4, request_id=speaking_id)
            await _synthesize(ws, text="Never said.", request_id=queued_id)
            assert (await ws.receive_json_from(TIMEOUT))["request_id"] == speaking_id
            assert isinstance(await ws.receive_from(TIMEOUT), bytes)
            await ws.send_json_to({"type": "cancel"})
            answer = await ws.receive_json_from(TIMEOUT)  # a text frame: no more audio came first
        finally:
            engine_tap.release()
        assert answer == {"type": "cancelled", "request_id": speaking_id}
        assert await asyncio.to_thread(engine_tap.finished.wait, TIMEOUT)
        # The connection goes on, and what comes next is the new utterance: the queued one was dropped.
        await _synthesize(ws, text="The caller asked something else.", request_id=next_id)
        start, _, done = await _utterance(ws)
        assert start["request_id"] == done["request_id"] == next_id and done["type"] == "done"
        await ws.disconnect(timeout=TIMEOUT)

    run(scenario)
    assert engine_tap.stopped_early  # the worker stopped synthesizing for nobody
    assert _usage(speaking_id).status == "client_disconnected"
    assert not UsageRecord.objects.filter(request_id=queued_id).exists()


def test_a_stop_while_the_checks_run_gives_the_stream_slot_back(live_voices, monkeypatch):
    """The checks run in a thread, which a cancel cannot interrupt. Under daphne a cancel frame is only
    dispatched after them (Channels closes old DB connections on the same thread first), so it races their
    result back to the event loop; the test makes that race certain by stopping the serving task itself
    while they are still running, exactly as the cancel handler does."""
    key = issue_key(TenantFactory(max_concurrent_streams=1))
    checked, release = threading.Event(), threading.Event()
    prepare = SynthesisSession.prepare

    def slow_prepare(self, data):
        prepare(self, data)  # takes the tenant's only stream slot
        checked.set()
        assert release.wait(TIMEOUT)

    monkeypatch.setattr(SynthesisSession, "prepare", slow_prepare)
    request_id = str(uuid.uuid4())

    async def scenario():
        ws = await _open(key)
        await _synthesize(ws, text="Interrupted before a sound.", request_id=request_id)
        try:
            assert await asyncio.to_thread(checked.wait, TIMEOUT)
            serving = next(task for task in asyncio.all_tasks() if task.get_coro().__name__ == "_serve_queue")
            serving.cancel()
        finally:
            release.set()
        await asyncio.wait([serving], timeout=TIMEOUT)
        assert serving.cancelled()
        await _synthesize(ws, text="The slot is free again.")
        assert (await _utterance(ws))[2]["type"] == "done"
        await ws.disconnect(timeout=TIMEOUT)

    run(scenario)
    assert _usage(request_id).status == "client_disconnected"


def test_cancel_with_nothing_in_flight_does_nothing(key):
    async def scenario():
        ws = await _open(key)
        await ws.send_json_to({"type": "cancel"})
        await _synthesize(ws, text="Still here.")
        assert (await _utterance(ws))[2]["type"] == "done"  # no "cancelled" came before its start
        await ws.disconnect(timeout=TIMEOUT)

    run(scenario)


def test_disconnecting_mid_stream_cancels_the_job_and_is_recorded(key, engine_tap):
    engine_tap.hold_after_first_chunk()
    request_id = str(uuid.uuid4())

    async def scenario():
        ws = await _open(key)
        try:
            await _synthesize(ws, text=LONG_TEXT * 4, request_id=request_id)
            await ws.receive_json_from(TIMEOUT)
            assert isinstance(await ws.receive_from(TIMEOUT), bytes)
            await ws.disconnect(timeout=TIMEOUT)
        finally:
            engine_tap.release()
        assert await asyncio.to_thread(engine_tap.finished.wait, TIMEOUT)

    run(scenario)
    assert engine_tap.stopped_early
    row = _usage(request_id)
    assert row.status == "client_disconnected" and row.error_code == "client_disconnected"
