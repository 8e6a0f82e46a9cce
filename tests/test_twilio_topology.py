"""The Twilio bridge with real processes: Twilio's socket on one daphne, the integrator's REST calls on another,
a tts_worker behind them, all over Redis (the channel layer carries speak and clear to the call's bridge).
Needs REDIS_URL (`.ci/run`'s second pass)."""
import base64
import http.client
import json
import os
import time
import uuid
from pathlib import Path

import pytest

from tests.test_topology import PrivateRedis, Topology

pytestmark = pytest.mark.skipif(not os.environ.get("REDIS_URL"), reason="the web processes share Redis")

MESSAGES = Path(__file__).parent / "synthesis" / "twilio_messages"
RECORDED_STREAM_SID = "MZ18ad3ab5a668481ce02b83e7395059f0"
LONG_TEXT = " ".join(["This sentence keeps the caller listening for quite a while."] * 12)


@pytest.fixture
def two_web_processes(tmp_path):
    redis_server = PrivateRedis(tmp_path)
    running = Topology(tmp_path, None, redis_url=redis_server.url)
    try:
        other_port = running.start_web("web2")
        running.start_worker("a", "--engines", "espeak")
        running.wait_for_workers(1)
        running.wait_for_engines("espeak")
        yield running, other_port
    finally:
        running.stop()
        redis_server.stop()


def _recorded(name: str, stream_sid: str) -> dict:
    return json.loads((MESSAGES / f"{name}.json").read_text().replace(RECORDED_STREAM_SID, stream_sid))


def _post(port: int, key: str, path: str, body: dict | None = None) -> tuple[int, dict]:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    connection.request("POST", path, body=json.dumps(body or {}),
                       headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
    response = connection.getresponse()
    return response.status, json.loads(response.read())


def _until_live(port: int, key: str, path: str, body: dict, timeout: float = 20) -> dict:
    """POST until the bridge has the stream up (404 until then), as an app racing Twilio's start would."""
    deadline = time.monotonic() + timeout
    while (answer := _post(port, key, path, body))[0] == 404:
        assert time.monotonic() < deadline, "the stream never came up"
        time.sleep(0.05)
    assert answer[0] == 202, answer
    return answer[1]


def test_speak_and_clear_on_one_web_process_reach_the_call_on_another(two_web_processes):
    from websockets.sync.client import connect

    topology, other_port = two_web_processes
    stream_sid, call_sid = "MZ" + uuid.uuid4().hex, "CA" + uuid.uuid4().hex
    start = _recorded("start", stream_sid)
    start["start"]["callSid"] = call_sid
    start["start"]["customParameters"] = {"api_key": topology.key}
    with connect(f"ws://127.0.0.1:{topology.port}/v1/twilio", open_timeout=20) as ws:
        ws.send(json.dumps(_recorded("connected", stream_sid)))
        ws.send(json.dumps(start))
        queued = _until_live(other_port, topology.key, f"/v1/twilio/calls/{call_sid}/speak", {"text": "Hello there."})
        audio = bytearray()
        while (message := json.loads(ws.recv(timeout=20)))["event"] == "media":
            audio += base64.b64decode(message["media"]["payload"])
        assert message == {"event": "mark", "streamSid": stream_sid, "mark": {"name": queued["request_id"]}}
        assert 0.5 < len(audio) / 8000 < 3

        _post(other_port, topology.key, f"/v1/twilio/calls/{call_sid}/speak", {"text": LONG_TEXT})
        assert json.loads(ws.recv(timeout=20))["event"] == "media"  # it is being spoken: barge in
        assert _post(other_port, topology.key, f"/v1/twilio/calls/{stream_sid}/clear")[0] == 202
        while (message := json.loads(ws.recv(timeout=20)))["event"] == "media":
            pass
        assert message == {"event": "clear", "streamSid": stream_sid}
        ws.send(json.dumps(_recorded("stop", stream_sid)))
    rows = topology.usage("request_id", "status")
    assert [row["status"] for row in rows] == ["success", "client_disconnected"]
    assert rows[0]["request_id"] == queued["request_id"]
