"""The service as a user runs it: a real daphne process, spoken to over TCP like the README's curl commands."""
import http.client
import json
import socket
import time
import uuid

import pytest

from tests.live import start_server


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    yield from start_server(tmp_path_factory.mktemp("server"))


def _connection(server) -> http.client.HTTPConnection:
    return http.client.HTTPConnection("127.0.0.1", server["port"], timeout=20)


def test_health_over_http(server):
    connection = _connection(server)
    connection.request("GET", "/v1/health")
    response = connection.getresponse()
    body = json.loads(response.read())
    assert response.status == 200 and body["status"] in {"ok", "degraded"}
    assert body["engines"]["espeak"]["available"] is True


def test_synthesize_streams_a_wav_with_chunked_transfer(server):
    connection = _connection(server)
    boundary = uuid.uuid4().hex
    fields = {"text": "Hello from CallWaiting. " * 20, "voice_id": "default"}
    body = "".join(
        f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n' for name, value in fields.items()
    ) + f"--{boundary}--\r\n"
    connection.request(
        "POST", "/v1/synthesize", body=body.encode(),
        headers={"Authorization": f"Bearer {server['key']}", "Content-Type": f"multipart/form-data; boundary={boundary}"},
    )
    response = connection.getresponse()
    assert response.status == 200 and response.getheader("Content-Type") == "audio/wav"
    # No Content-Length: the body is sent in chunks while it is synthesized.
    assert response.getheader("Transfer-Encoding") == "chunked" and response.getheader("Content-Length") is None
    first = response.read1(65536)
    assert first[:4] == b"RIFF"
    rest = response.read()
    assert rest  # more audio followed the first read
    seconds = (len(first) + len(rest) - 44) / 2 / 22050
    assert seconds > 5


def test_bad_key_over_http_is_401_in_the_error_shape(server):
    connection = _connection(server)
    connection.request("GET", "/v1/voices", headers={"Authorization": "Bearer sk_test_nope"})
    response = connection.getresponse()
    assert response.status == 401
    assert json.loads(response.read())["error"]["code"] == "malformed_api_key"


def test_unknown_path_is_404_in_the_error_shape(server):
    connection = _connection(server)
    connection.request("GET", "/v2/nothing")
    response = connection.getresponse()
    assert response.status == 404
    assert json.loads(response.read())["error"]["code"] == "not_found"


# Minutes of speech: far more audio than socket buffers, daphne's buffer and the worker's window together hold.
LONG_TEXT = " ".join(f"This is sentence number {n} of a long answer read by a slow listener." for n in range(60))


class _SmallBufferConnection(http.client.HTTPConnection):
    """A client whose socket buffers only a few kilobytes, so that not reading stops the server within them."""

    def connect(self):
        self.sock = socket.socket()
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        self.sock.settimeout(self.timeout)
        self.sock.connect((self.host, self.port))


def _start_long_stream(server, **fields) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
    connection = _SmallBufferConnection("127.0.0.1", server["port"], timeout=20)
    connection.request("POST", "/v1/synthesize", body=json.dumps({"text": LONG_TEXT, **fields}), headers={
        "Authorization": f"Bearer {server['key']}", "Content-Type": "application/json"})
    response = connection.getresponse()
    assert response.status == 200
    return connection, response


def _workers(server) -> list[dict]:
    connection = _connection(server)
    connection.request("GET", "/v1/health")
    return json.loads(connection.getresponse().read())["workers"]


def _until(predicate, timeout: float = 15):
    deadline = time.monotonic() + timeout
    while not (result := predicate()):
        assert time.monotonic() < deadline, "condition never became true"
        time.sleep(0.1)
    return result


def test_a_client_that_stops_reading_holds_its_job_and_gets_every_sample_when_it_resumes(server):
    _, response = _start_long_stream(server, format="pcm")
    first = response.read1(1024)
    held = _until(lambda: [worker for worker in _workers(server) if worker["waiting_for_client"]])
    assert held[0]["load"] == 1  # the job is parked on the worker, not finished into a buffer somewhere
    streamed = len(first) + len(response.read())

    complete = _connection(server)
    complete.request("POST", "/v1/synthesize", body=json.dumps({"text": LONG_TEXT, "format": "pcm", "streaming": False}),
                     headers={"Authorization": f"Bearer {server['key']}", "Content-Type": "application/json"})
    expected = len(complete.getresponse().read())
    assert expected > 60 * 2 * 22050  # over a minute of speech
    assert abs(streamed - expected) < 0.01 * expected  # eSpeak varies by a few samples between runs, no more
    _until(lambda: all(worker["load"] == 0 for worker in _workers(server)))


def test_a_stalled_client_that_hangs_up_frees_its_worker(server):
    connection, response = _start_long_stream(server)
    assert response.read1(1024)[:4] == b"RIFF"
    _until(lambda: any(worker["waiting_for_client"] for worker in _workers(server)))
    connection.close()
    response.close()
    _until(lambda: all(worker["load"] == 0 for worker in _workers(server)), timeout=5)


def _websocket(server):
    """A WebSocket client on /v1/stream with a fixed 64 kB socket buffer (no autotuning into megabytes; smaller
    than the loopback MSS would make TCP itself crawl), that queues at most two frames itself."""
    from websockets.sync.client import connect

    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 65536)
    sock.connect(("127.0.0.1", server["port"]))
    return connect(f"ws://127.0.0.1:{server['port']}/v1/stream", sock=sock, max_size=None, max_queue=2,
                   additional_headers={"Authorization": f"Bearer {server['key']}"}, open_timeout=20)


def test_websocket_listener_that_stops_reading_holds_its_job_and_gets_every_sample(server):
    with _websocket(server) as websocket:
        websocket.send(json.dumps({"type": "synthesize", "text": LONG_TEXT}))
        start = json.loads(websocket.recv(timeout=20))
        assert start["type"] == "start" and start["sample_rate"] == 22050
        received = len(websocket.recv(timeout=20))
        held = _until(lambda: [worker for worker in _workers(server) if worker["waiting_for_client"]])
        assert held[0]["load"] == 1
        while isinstance(frame := websocket.recv(timeout=20), bytes):
            received += len(frame)
        done = json.loads(frame)
    assert done["type"] == "done" and done["audio_seconds"] > 60
    assert received % 2 == 0 and abs(received / 2 / 22050 - done["audio_seconds"]) < 1e-4  # rounded to 0.1 ms


def test_streamed_text_over_tcp_is_spoken_sentence_by_sentence_and_each_is_billed_once_received(server):
    """Through daphne: the next sentence is made while the current one is still on its way (Delivery), and
    every sentence is billed as a success once the listener has all of it."""
    import sqlite3

    sentences = ["Thanks for calling.", "Your table for 4 is booked at 7.30 tonight.", "Dr. Lee will meet you there!",
                 "See you"]
    text = " ".join(sentences)
    utterances = []
    with _websocket(server) as websocket:
        for i in range(0, len(text), 3):
            websocket.send(json.dumps({"type": "text", "text": text[i:i + 3]}))
        websocket.send(json.dumps({"type": "flush"}))
        while len(utterances) < 4:
            start = json.loads(websocket.recv(timeout=20))
            assert start["type"] == "start", start
            received = 0
            while isinstance(frame := websocket.recv(timeout=20), bytes):
                received += len(frame)
            done = json.loads(frame)
            assert done["request_id"] == start["request_id"] and done["type"] == "done"
            assert abs(received / 2 / 22050 - done["audio_seconds"]) < 1e-4
            utterances.append(done)
    assert [done["characters"] for done in utterances] == [len(sentence) for sentence in sentences]
    ids = tuple(done["request_id"].replace("-", "") for done in utterances)

    def rows():
        with sqlite3.connect(server["db"]) as database:
            found = database.execute(
                f"SELECT status FROM tenants_usagerecord WHERE replace(request_id, '-', '') IN ({','.join('?' * 4)})", ids
            ).fetchall()
        return found if len(found) == 4 else None

    assert _until(rows) == [("success",)] * 4


def test_websocket_listener_that_hangs_up_mid_stream_frees_its_worker(server):
    websocket = _websocket(server)
    websocket.send(json.dumps({"type": "synthesize", "text": LONG_TEXT}))
    assert json.loads(websocket.recv(timeout=20))["type"] == "start"
    _until(lambda: any(worker["waiting_for_client"] for worker in _workers(server)))
    websocket.socket.shutdown(socket.SHUT_RDWR)
    websocket.socket.close()
    _until(lambda: all(worker["load"] == 0 for worker in _workers(server)), timeout=5)


@pytest.fixture
def impatient_server(tmp_path):
    yield from start_server(tmp_path, TTS_CLIENT_STALL_TIMEOUT="1")


def test_a_client_that_reads_nothing_for_the_stall_timeout_is_dropped_and_its_job_cancelled(impatient_server):
    import sqlite3

    _, response = _start_long_stream(impatient_server)
    assert response.read1(1024)[:4] == b"RIFF"
    with pytest.raises((http.client.IncompleteRead, ConnectionError)):  # dropped: never a complete-looking file
        time.sleep(3)  # reads nothing for longer than TTS_CLIENT_STALL_TIMEOUT
        while response.read1(65536):
            pass
    _until(lambda: all(worker["load"] == 0 for worker in _workers(impatient_server)), timeout=5)
    with sqlite3.connect(impatient_server["db"]) as database:
        rows = database.execute("SELECT status FROM tenants_usagerecord").fetchall()
    assert rows == [("client_disconnected",)]


@pytest.fixture
def fresh_server(tmp_path):
    yield from start_server(tmp_path)


def test_a_client_that_resets_mid_stream_is_billed_for_what_it_received_not_as_a_success(fresh_server):
    """eSpeak makes minutes of audio in seconds: the whole clip can be handed to the socket's buffers before a
    client that read 50 KB resets the connection. That is client_disconnected, billed for what arrived."""
    import sqlite3
    import struct as struct_module

    server = fresh_server
    connection = _connection(server)
    about_80_seconds = " ".join(LONG_TEXT.split(". ")[:25])
    connection.request("POST", "/v1/synthesize", body=json.dumps({"text": about_80_seconds}), headers={
        "Authorization": f"Bearer {server['key']}", "Content-Type": "application/json"})
    response = connection.getresponse()
    received = len(response.read1(50_000))
    while received < 50_000:
        received += len(response.read1(50_000 - received))
    connection.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct_module.pack("ii", 1, 0))
    # The server goes on making the clip into the socket's buffers (the kernel's send queue grows to megabytes
    # on its own); let it finish before hanging up, as a client that stalls and then resets would.
    _until(lambda: all(worker["load"] == 0 for worker in _workers(server)), timeout=30)
    response.close()
    connection.close()  # the last reference to the socket: a reset, with the rest of the clip unread

    def row():
        with sqlite3.connect(server["db"]) as database:
            return database.execute("SELECT status, audio_seconds FROM tenants_usagerecord").fetchall()

    _until(lambda: row(), timeout=20)
    [(status, seconds)] = row()
    assert status == "client_disconnected"
    # What it read (1.1 s) and what its kernel had taken for it (the socket's receive buffer, ~1 s here); not
    # what the server made into its own send queue, which it never received.
    assert seconds < 50_000 / 2 / 22050 + 3


def test_a_websocket_listener_that_resets_after_the_audio_was_made_is_billed_for_what_it_received(fresh_server):
    import sqlite3
    import struct as struct_module

    server = fresh_server
    websocket = _websocket(server)
    websocket.send(json.dumps({"type": "synthesize", "text": " ".join(LONG_TEXT.split(". ")[:25])}))
    assert json.loads(websocket.recv(timeout=20))["type"] == "start"
    received = 0
    while received < 50_000:
        received += len(websocket.recv(timeout=20))
    _until(lambda: all(worker["load"] == 0 for worker in _workers(server)), timeout=30)  # all made and sent
    websocket.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct_module.pack("ii", 1, 0))
    websocket.socket.close()

    def row():
        with sqlite3.connect(server["db"]) as database:
            return database.execute("SELECT status, audio_seconds FROM tenants_usagerecord").fetchall()

    [(status, seconds)] = _until(row, timeout=20)
    assert status == "client_disconnected"
    # Billed for what reached the client's machine, as the server can tell (SIOCOUTQ): at least what the test read,
    # plus what waited in its socket buffer and in the websockets library, which on a busy machine is a few
    # seconds of audio: far from the whole clip (over a minute) a success would bill.
    assert received / 2 / 22050 - 0.01 <= seconds < 0.2 * len(" ".join(LONG_TEXT.split(". ")[:25])) / 15
