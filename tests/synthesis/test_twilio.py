"""The Twilio Media Streams bridge /v1/twilio, driven as Twilio drives it: the recorded example messages of
tests/synthesis/twilio_messages/ replayed through the real ASGI application, and the REST calls an
integrator's app makes while the call is up."""
import asyncio
import base64
import json
import logging
import uuid
from pathlib import Path

import numpy as np
import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.core.cache import cache

from synthesis import twilio
from synthesis.twilio import FRAME_BYTES, TwilioMediaStreamConsumer
from tenants.models import UsageRecord
from tests.asgi import AsgiClient
from tests.factories import TenantFactory, issue_key
from tests.synthesis.test_formats import _g711_decode
from tests.synthesis.test_websocket import key, run, tenant  # noqa: F401  (key and tenant: fixtures)

TIMEOUT = 20
MESSAGES = Path(__file__).parent / "twilio_messages"
RECORDED_STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"  # the SID in the recorded messages
GREETING = "Thank you for calling. Please hold while we find your booking."
LONG_TEXT = " ".join(["This sentence keeps the caller listening for quite a while."] * 12)


class FakeClock:
    """The bridge's clock under test control. Free-running, every sleep passes at once (virtual time); held,
    a sleep parks until the test advances the time, and `parked` tells the test the bridge is waiting."""

    def __init__(self, *, held: bool = False):
        self.time = 1000.0
        self.held = held
        self.parked = asyncio.Event()
        self._sleepers: list[asyncio.Future] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        if not self.held:
            self.time += seconds
            await asyncio.sleep(0)
            return
        wake = asyncio.get_running_loop().create_future()
        self._sleepers.append(wake)
        self.parked.set()
        await wake  # the bridge looks at the time again once woken

    def advance(self, seconds: float) -> None:
        self.time += seconds
        self.parked.clear()
        for wake in self._sleepers:
            if not wake.done():
                wake.set_result(None)
        self._sleepers.clear()

    def run_free(self) -> None:
        self.held = False
        self.advance(0)


@pytest.fixture
def clock(monkeypatch):
    fake = FakeClock()
    monkeypatch.setattr(TwilioMediaStreamConsumer, "clock", fake)
    return fake


@pytest.fixture
def bridge_log():
    """What the bridge logs (on its own logger: the embedded worker's start re-applies the logging settings,
    which drops caplog's handler from the root logger)."""
    messages: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler, logger = Collect(level=logging.DEBUG), logging.getLogger("synthesis.twilio")
    logger.addHandler(handler)
    yield messages
    logger.removeHandler(handler)


def recorded(name: str, stream_sid: str) -> dict:
    """A recorded Twilio message, for this test's stream."""
    return json.loads((MESSAGES / f"{name}.json").read_text().replace(RECORDED_STREAM_SID, stream_sid))


def new_stream_sid() -> str:
    return "MZ" + uuid.uuid4().hex


async def _call(stream_sid: str, *, live: bool = True, **parameters) -> WebsocketCommunicator:
    """Twilio answering a call with <Connect><Stream url=".../v1/twilio"> and these <Parameter>s; with `live`,
    once the bridge has the stream up (its REST endpoints find it). `ws.call_sid`: the call's CallSid."""
    from callwaiting.asgi import application

    ws = WebsocketCommunicator(application, "/v1/twilio")
    connected, _ = await ws.connect(TIMEOUT)
    assert connected
    await ws.send_json_to(recorded("connected", stream_sid))
    start = recorded("start", stream_sid)
    ws.call_sid = start["start"]["callSid"] = "CA" + uuid.uuid4().hex
    start["start"]["customParameters"] = {**start["start"]["customParameters"], **parameters}
    await ws.send_json_to(start)
    while live and await sync_to_async(cache.get)(twilio._live_sid_key(stream_sid)) is None:
        await asyncio.sleep(0.005)  # the bridge is checking the key
    return ws


async def _utterance(ws: WebsocketCommunicator, stream_sid: str) -> tuple[bytes, str]:
    """The media messages of one utterance, up to the mark after it: the audio and the mark's name."""
    media_shape, mark_shape = recorded("outbound_media", stream_sid), recorded("outbound_mark", stream_sid)
    audio = bytearray()
    while (message := await ws.receive_json_from(TIMEOUT))["event"] == "media":
        assert message.keys() == media_shape.keys() and message["media"].keys() == media_shape["media"].keys()
        assert message["streamSid"] == stream_sid
        payload = base64.b64decode(message["media"]["payload"])
        assert len(payload) == FRAME_BYTES  # 20 ms, as Twilio's own frames; the last one padded with silence
        audio += payload
    assert message.keys() == mark_shape.keys() and message["event"] == "mark", message
    assert message["streamSid"] == stream_sid
    return bytes(audio), message["mark"]["name"]


async def _rest_mulaw(key: str, text: str) -> bytes:
    response = await AsgiClient(key=key).post("/v1/synthesize", json={"text": text, "format": "mulaw"})
    assert response.status == 200, response.body
    return response.body


async def _closed(ws: WebsocketCommunicator) -> int:
    message = await ws.receive_output(TIMEOUT)
    assert message["type"] == "websocket.close", message
    await ws.disconnect(message.get("code", 1000), TIMEOUT)  # as daphne tells the app once the socket is closed
    return message.get("code", 1000)  # a plain close() sends none: 1000, normal closure


def _rows(tenant) -> list[UsageRecord]:
    return list(UsageRecord.objects.filter(tenant=tenant).order_by("created_at"))


def test_the_greeting_is_spoken_as_20ms_mulaw_media_messages_then_a_mark(clock, key, tenant):
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, api_key=key, text=GREETING)
        await ws.send_json_to(recorded("media", stream_sid))  # the caller's audio: accepted, ignored
        await ws.send_json_to(recorded("dtmf", stream_sid))
        audio, mark = await _utterance(ws, stream_sid)
        await ws.send_json_to(recorded("mark", stream_sid) | {"mark": {"name": mark}})  # Twilio: played to the mark
        await ws.send_json_to(recorded("stop", stream_sid))
        assert await _closed(ws) == 1000
        return audio, mark, await _rest_mulaw(key, GREETING)

    audio, mark, over_rest = run(scenario)
    caller_hears, reference = _g711_decode(audio, "mulaw"), _g711_decode(over_rest, "mulaw")
    # The same speech as POST /v1/synthesize makes as mulaw (eSpeak's length varies by a few ms between runs).
    assert len(caller_hears) / 8000 == pytest.approx(len(reference) / 8000, abs=0.05)
    assert np.abs(caller_hears.astype(np.int32)).mean() == pytest.approx(np.abs(reference.astype(np.int32)).mean(), rel=0.1)
    greeting_row, rest_row = _rows(tenant)
    assert str(greeting_row.request_id) == mark
    assert greeting_row.status == UsageRecord.Status.SUCCESS and greeting_row.characters == rest_row.characters
    assert greeting_row.audio_seconds == pytest.approx(len(caller_hears) / 8000, abs=0.02)  # all of it, billed


def test_text_spoken_through_rest_mid_call_follows_the_greeting(clock, key, tenant):
    clock.held = True
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, api_key=key, text=GREETING)
        await asyncio.wait_for(clock.parked.wait(), TIMEOUT)  # the greeting is playing
        response = await AsgiClient(key=key).post(  # the app knows the CallSid from its TwiML webhook
            f"/v1/twilio/calls/{ws.call_sid}/speak", json={"text": "Your booking is confirmed.", "speed": 1.2}
        )
        assert response.status == 202, response.body
        assert response.json()["stream_sid"] == stream_sid
        assert response.json()["status"] == "queued"
        clock.run_free()
        greeting, first_mark = await _utterance(ws, stream_sid)
        confirmation, second_mark = await _utterance(ws, stream_sid)
        await ws.send_json_to(recorded("stop", stream_sid))
        await _closed(ws)
        return response.json()["request_id"], first_mark, second_mark, confirmation

    request_id, first_mark, second_mark, confirmation = run(scenario)
    assert second_mark == request_id != first_mark
    rows = _rows(tenant)
    assert [str(row.request_id) for row in rows] == [first_mark, request_id]
    assert {row.status for row in rows} == {UsageRecord.Status.SUCCESS}
    assert rows[1].audio_seconds == pytest.approx(len(confirmation) / 8000, abs=0.01)


def test_a_request_id_header_names_the_utterance(clock, key):
    stream_sid, request_id = new_stream_sid(), str(uuid.uuid4())

    async def scenario():
        ws = await _call(stream_sid, api_key=key)  # no greeting: silent until the app speaks
        assert await ws.receive_nothing(0.2)
        response = await AsgiClient(key=key).post(
            f"/v1/twilio/calls/{stream_sid}/speak", json={"text": "Hello."}, headers={"X-Request-ID": request_id}
        )
        assert response.json()["request_id"] == request_id
        _, mark = await _utterance(ws, stream_sid)
        await ws.disconnect(timeout=TIMEOUT)
        return mark

    assert run(scenario) == request_id


def test_clear_stops_the_audio_at_once_drops_the_queue_and_clears_twilio(clock, key, tenant):
    clock.held = True
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, api_key=key, text=LONG_TEXT)
        await asyncio.wait_for(clock.parked.wait(), TIMEOUT)
        clock.advance(0.1)  # the caller hears 100 ms
        await asyncio.wait_for(clock.parked.wait(), TIMEOUT)
        client = AsgiClient(key=key)
        queued = await client.post(f"/v1/twilio/calls/{stream_sid}/speak", json={"text": "Never said."})
        assert queued.status == 202
        response = await client.post(f"/v1/twilio/calls/{stream_sid}/clear")
        assert response.status == 202 and response.json()["status"] == "cleared"
        before_clear = []
        while (message := await ws.receive_json_from(TIMEOUT))["event"] == "media":
            before_clear.append(message)
        assert message == recorded("outbound_clear", stream_sid)
        clock.run_free()
        assert await ws.receive_nothing(0.3)  # neither the rest of the utterance nor the queued one
        await ws.send_json_to(recorded("stop", stream_sid))
        await _closed(ws)
        return before_clear

    sent = run(scenario)
    assert len(sent) * FRAME_BYTES / 8000 <= 0.1 + 0.25 + 1e-9  # what was played, and the lead
    (row,) = _rows(tenant)  # the queued utterance was dropped before it was started
    assert row.status == UsageRecord.Status.CLIENT_DISCONNECTED
    assert row.audio_seconds == pytest.approx(0.1, abs=0.005)  # billed for what the caller heard


def test_clear_cancels_the_worker_job_mid_speech(clock, key, tenant, engine_tap):
    engine_tap.hold_after_first_chunk()
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, api_key=key, text=LONG_TEXT * 4)
        try:
            assert (await ws.receive_json_from(TIMEOUT))["event"] == "media"
            assert await asyncio.to_thread(engine_tap.held.wait, TIMEOUT)  # the engine is mid-speech
            response = await AsgiClient(key=key).post(f"/v1/twilio/calls/{stream_sid}/clear")
            assert response.status == 202
            while (message := await ws.receive_json_from(TIMEOUT))["event"] == "media":
                pass
            assert message["event"] == "clear"
        finally:
            engine_tap.release()
        assert await asyncio.to_thread(engine_tap.finished.wait, TIMEOUT)
        await ws.disconnect(timeout=TIMEOUT)

    run(scenario)
    assert engine_tap.stopped_early  # the worker stopped synthesizing for nobody
    (row,) = _rows(tenant)
    assert row.status == UsageRecord.Status.CLIENT_DISCONNECTED


def test_stop_ends_the_call_and_bills_the_cut_utterance_as_client_disconnected(clock, key, tenant):
    clock.held = True
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, api_key=key, text=LONG_TEXT)
        await asyncio.wait_for(clock.parked.wait(), TIMEOUT)
        clock.advance(0.06)  # the caller hears 60 ms, then hangs up
        await asyncio.wait_for(clock.parked.wait(), TIMEOUT)
        await ws.send_json_to(recorded("stop", stream_sid))
        while (message := await ws.receive_output(TIMEOUT))["type"] != "websocket.close":
            assert json.loads(message["text"])["event"] == "media"
        await ws.disconnect(message.get("code", 1000), TIMEOUT)  # as daphne tells the app once the socket is closed
        # The call is over: the app can no longer speak into it.
        return await AsgiClient(key=key).post(f"/v1/twilio/calls/{stream_sid}/speak", json={"text": "Too late."})

    late = run(scenario)
    assert late.status == 404 and late.json()["error"]["code"] == "stream_not_found"
    (row,) = _rows(tenant)
    assert row.status == UsageRecord.Status.CLIENT_DISCONNECTED and row.error_code == "client_disconnected"
    assert row.audio_seconds == pytest.approx(0.06, abs=0.005)


def test_a_dropped_socket_cancels_the_utterance(clock, key, tenant):
    clock.held = True
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, api_key=key, text=LONG_TEXT)
        await asyncio.wait_for(clock.parked.wait(), TIMEOUT)
        await ws.disconnect(timeout=TIMEOUT)

    run(scenario)
    (row,) = _rows(tenant)
    assert row.status == UsageRecord.Status.CLIENT_DISCONNECTED


@pytest.mark.parametrize(("key_given", "close_code"), [("none", 4401), ("unknown", 4401), ("voices scope only", 4403)])
def test_a_missing_bad_or_unscoped_key_closes_without_audio(clock, tenant, key_given, close_code, bridge_log):
    parameters = {
        "none": {}, "unknown": {"api_key": "sk_test_not_a_real_key"},
        "voices scope only": {"api_key": issue_key(tenant, scopes=["voices"])},
    }[key_given]
    good_key = issue_key(tenant)
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, live=False, text=GREETING, **parameters)
        code = await _closed(ws)  # the close comes first: no media
        response = await AsgiClient(key=good_key).post(f"/v1/twilio/calls/{stream_sid}/speak", json={"text": "Anyone?"})
        return code, response.status

    code, speak_status = run(scenario)
    assert code == close_code and speak_status == 404  # never a live stream
    assert not _rows(tenant)
    refusals = [message for message in bridge_log if "refused" in message]
    assert refusals and stream_sid in refusals[0]  # logged, to be found by the stream's SID...
    if key := parameters.get("api_key"):
        assert all(key not in message for message in bridge_log)  # ...never with the key


def test_another_tenants_stream_is_404_on_both_rest_endpoints(clock, key):
    stream_sid = new_stream_sid()
    stranger = issue_key(TenantFactory())

    async def scenario():
        ws = await _call(stream_sid, api_key=key)
        assert await ws.receive_nothing(0.2)
        refused = []
        for sid in (stream_sid, ws.call_sid):
            refused.append(await AsgiClient(key=stranger).post(f"/v1/twilio/calls/{sid}/speak", json={"text": "Hi."}))
            refused.append(await AsgiClient(key=stranger).post(f"/v1/twilio/calls/{sid}/clear"))
        assert await ws.receive_nothing(0.2)  # nothing reached the call
        refused.append(await AsgiClient(key=key).post(f"/v1/twilio/calls/{new_stream_sid()}/clear"))  # no such call
        await ws.disconnect(timeout=TIMEOUT)
        return refused

    for response in run(scenario):
        assert response.status == 404 and response.json()["error"]["code"] == "stream_not_found"


def test_speak_checks_its_fields_like_synthesize(clock, key):
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, api_key=key)
        client = AsgiClient(key=key)
        both = await client.post(f"/v1/twilio/calls/{stream_sid}/speak", json={"text": "a", "ssml": "<speak>b</speak>"})
        slow = await client.post(f"/v1/twilio/calls/{stream_sid}/speak", json={"text": "a", "speed": 9})
        await ws.disconnect(timeout=TIMEOUT)
        return both, slow

    for response in run(scenario):
        assert response.status == 400 and response.json()["error"]["code"] == "invalid_request"


def test_pacing_keeps_no_more_than_the_lead_ahead_of_playback(clock, key, settings):
    settings.TTS_TWILIO_LEAD_SECONDS = 0.2
    clock.held = True
    stream_sid = new_stream_sid()
    start_time = clock.time

    async def scenario():
        ws = await _call(stream_sid, api_key=key, text=LONG_TEXT)
        sent = 0
        ahead_at_each_wait = []
        for _ in range(10):
            await asyncio.wait_for(clock.parked.wait(), TIMEOUT)
            while not ws.output_queue.empty():
                message = await ws.receive_json_from(TIMEOUT)
                assert message["event"] == "media"
                sent += len(base64.b64decode(message["media"]["payload"]))
            ahead_at_each_wait.append(sent / 8000 - (clock.time - start_time))
            clock.advance(0.07)  # Twilio played 70 ms
        await ws.disconnect(timeout=TIMEOUT)
        return ahead_at_each_wait

    ahead = run(scenario)
    # Filled up to the lead, never past it: a 20 ms frame more would have overshot.
    assert all(0.2 - 0.02 < seconds <= 0.2 + 1e-9 for seconds in ahead), ahead


def test_a_socket_that_never_starts_a_stream_is_closed(clock, live_voices, monkeypatch):
    monkeypatch.setattr(twilio, "START_TIMEOUT_SECONDS", 0.05)

    async def scenario():
        from callwaiting.asgi import application

        ws = WebsocketCommunicator(application, "/v1/twilio")
        assert (await ws.connect(TIMEOUT))[0]
        await ws.send_json_to(recorded("connected", new_stream_sid()))  # and no start
        return await _closed(ws)

    assert run(scenario) == 4408


def test_a_refused_greeting_is_billed_as_an_error_and_the_call_goes_on(clock, key, tenant):
    stream_sid = new_stream_sid()

    async def scenario():
        ws = await _call(stream_sid, api_key=key, text=GREETING, voice_id="no-such-voice")
        response = await AsgiClient(key=key).post(f"/v1/twilio/calls/{stream_sid}/speak", json={"text": "Hello."})
        assert response.status == 202
        _, mark = await _utterance(ws, stream_sid)  # the next utterance is spoken
        await ws.disconnect(timeout=TIMEOUT)
        return mark

    mark = run(scenario)
    refused, spoken = _rows(tenant)
    assert refused.status == UsageRecord.Status.ERROR and refused.error_code == "voice_not_found"
    assert spoken.status == UsageRecord.Status.SUCCESS and str(spoken.request_id) == mark


def test_frames_twilio_never_sends_are_ignored_and_a_start_without_a_stream_sid_is_refused(clock, key, tenant):
    async def scenario():
        from callwaiting.asgi import application

        ws = WebsocketCommunicator(application, "/v1/twilio")
        assert (await ws.connect(TIMEOUT))[0]
        for frame in ("not json", "[1, 2]", "[" * 100_000, json.dumps({"event": "surprise"})):
            await ws.send_to(text_data=frame)
        await ws.send_to(bytes_data=b"\x00\x01")
        assert await ws.receive_nothing(0.1)
        start = recorded("start", "unused")
        start["start"]["streamSid"] = start["streamSid"] = "MZ not/a group name"
        start["start"]["customParameters"] = {"api_key": key, "text": GREETING}
        await ws.send_json_to(start)
        return await _closed(ws)

    assert run(scenario) == 4400
    assert not _rows(tenant)
