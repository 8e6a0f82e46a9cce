"""What the server does with requests over its limits, before the application sees them (callwaiting/server.py):
a real server process spoken to over raw TCP, so each test can send part of a request and see the answer come
before the rest was ever sent."""
import http.client
import json
import socket

import pytest

from tests.live import start_server

UPLOAD_LIMIT = 1_000_000 + 64 * 1024  # TTS_MAX_UPLOAD_BYTES below, plus the room for the form's other fields
SIXTY_MB = 60 * 1024 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    # A test below revokes the key with SQL by hand, behind the server's back: no lookup cache to wait out.
    yield from start_server(tmp_path_factory.mktemp("limits"), TTS_MAX_UPLOAD_BYTES="1000000",
                             WS_MAX_MESSAGE_BYTES="65536", TTS_LOOKUP_CACHE_SECONDS="0")


def _connect(server) -> socket.socket:
    return socket.create_connection(("127.0.0.1", server["port"]), timeout=20)


def _head(method: str, path: str, headers: dict) -> bytes:
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1", *(f"{name}: {value}" for name, value in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode()


def _answer(sock: socket.socket) -> tuple[int, dict, dict | None]:
    """The server's answer on `sock`: status, headers and the JSON body."""
    response = http.client.HTTPResponse(sock)
    response.begin()
    body = response.read()
    return response.status, {k.lower(): v for k, v in response.getheaders()}, json.loads(body) if body else None


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _code(body: dict) -> str:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


def _health(server) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=20)
    connection.request("GET", "/v1/health")
    return connection.getresponse().status


def test_an_upload_declaring_60_mb_is_refused_before_any_of_its_body_is_sent(server):
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/v1/voices/upload", {
            "Authorization": f"Bearer {server['key']}", "Content-Type": "multipart/form-data; boundary=x",
            "Content-Length": SIXTY_MB}))
        status, headers, body = _answer(sock)  # not one byte of the body sent
    assert status == 413 and _code(body) == "upload_too_large"
    assert headers["connection"] == "close"


@pytest.mark.parametrize("path, content_type", [
    ("/v1/synthesize", "application/json"),
    ("/v1/synthesize", "application/x-www-form-urlencoded"),
])
def test_a_json_or_form_body_declaring_20_mb_is_413_in_the_error_shape(server, path, content_type):
    with _connect(server) as sock:
        sock.sendall(_head("POST", path, {
            "Authorization": f"Bearer {server['key']}", "Content-Type": content_type, "Content-Length": 20 * 1024 * 1024}))
        status, _, body = _answer(sock)
    assert status == 413 and _code(body) == "request_too_large"


@pytest.mark.parametrize("authorization, code", [
    (None, "authentication_required"),
    ("Bearer sk_test_nope", "malformed_api_key"),
    ("Basic dXNlcjpwYXNz", "malformed_authorization"),
])
def test_a_chunked_upload_without_a_valid_key_is_401_before_its_body_is_sent(server, authorization, code):
    headers = {"Content-Type": "multipart/form-data; boundary=x", "Transfer-Encoding": "chunked"}
    if authorization:
        headers["Authorization"] = authorization
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/v1/voices/upload", headers))
        status, response_headers, body = _answer(sock)  # none of the body sent
    assert status == 401 and _code(body) == code
    assert response_headers["www-authenticate"] == 'Bearer realm="api"'


def test_a_revoked_key_is_refused_before_the_body_too(server):
    import sqlite3

    with sqlite3.connect(server["db"]) as database:
        database.execute("UPDATE tenants_apikey SET revoked_at = CURRENT_TIMESTAMP")
    try:
        with _connect(server) as sock:
            sock.sendall(_head("POST", "/v1/synthesize", {
                "Authorization": f"Bearer {server['key']}", "Content-Type": "application/json",
                "Transfer-Encoding": "chunked"}))
            status, _, body = _answer(sock)
        assert status == 401 and _code(body) == "api_key_revoked"
    finally:
        with sqlite3.connect(server["db"]) as database:
            database.execute("UPDATE tenants_apikey SET revoked_at = NULL")


@pytest.mark.parametrize("length, authorization, status", [
    (SIXTY_MB, "good", 413),
    (500_000, None, 401),
    (500_000, "good", 100),
])
def test_a_client_expecting_100_continue_is_told_not_to_send_a_body_that_would_be_refused(
        server, length, authorization, status):
    headers = {"Content-Type": "multipart/form-data; boundary=x", "Content-Length": length, "Expect": "100-continue"}
    if authorization:
        headers["Authorization"] = f"Bearer {server['key']}"
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/v1/voices/upload", headers))
        first_line = sock.makefile("rb").readline()
    assert first_line.startswith(b"HTTP/1.1 %d " % status)


def test_a_chunked_upload_is_cut_at_the_limit_and_the_client_need_not_send_the_rest(server):
    piece = b"\0" * 65536
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/v1/voices/upload", {
            "Authorization": f"Bearer {server['key']}", "Content-Type": "multipart/form-data; boundary=x",
            "Transfer-Encoding": "chunked"}))
        sent = 0
        while sent <= UPLOAD_LIMIT:
            sock.sendall(_chunk(piece))
            sent += len(piece)
        status, _, body = _answer(sock)  # answered with 1 MB of the 60 MB sent
        assert status == 413 and _code(body) == "upload_too_large"
        # What the client still sends is read and dropped: its connection is not reset under it.
        for _ in range(64):
            sock.sendall(_chunk(piece))
    assert _health(server) == 200


def test_a_chunked_request_with_a_good_key_is_served(server):
    text = json.dumps({"text": "Hello from a chunked request.", "format": "pcm", "streaming": False}).encode()
    with _connect(server) as sock:
        sock.sendall(_head("POST", "/v1/synthesize", {
            "Authorization": f"Bearer {server['key']}", "Content-Type": "application/json",
            "Transfer-Encoding": "chunked"}) + _chunk(text[:10]) + _chunk(text[10:]) + b"0\r\n\r\n")
        response = http.client.HTTPResponse(sock)
        response.begin()
        audio = response.read()
    assert response.status == 200 and response.getheader("Content-Type").startswith("audio/L16") and len(audio) > 10_000


def test_an_upload_within_the_limit_reaches_the_application(server):
    """The server no longer parses multipart bodies itself: a body without a valid boundary is Django's to
    answer, in the error shape (twisted answered an empty 400)."""
    body = b"--x\r\nnot a form\r\n"
    for content_type in ("multipart/form-data", 'multipart/form-data; boundary="bad\x01"'):
        with _connect(server) as sock:
            sock.sendall(_head("POST", "/v1/voices/upload", {
                "Authorization": f"Bearer {server['key']}", "Content-Type": content_type,
                "Content-Length": len(body)}) + body)
            status, _, answer = _answer(sock)
        assert status == 400 and _code(answer) == "malformed_request"


@pytest.mark.parametrize("headers", [
    {"Authorization": "Bearer " + "a" * 60_000},  # one line over the limit
    {f"X-Padding-{n}": "a" * 1000 for n in range(20)},  # all lines together over it
])
def test_headers_over_the_limit_are_431_in_the_error_shape(server, headers):
    with _connect(server) as sock:
        sock.sendall(_head("GET", "/v1/voices", headers))
        status, _, body = _answer(sock)
    assert status == 431 and _code(body) == "headers_too_large"
    assert _health(server) == 200


def test_a_request_line_over_the_limit_is_414(server):
    with _connect(server) as sock:
        sock.sendall(_head("GET", "/v1/voices?" + "a" * 20_000, {}))
        status, _, body = _answer(sock)
    assert status == 414 and _code(body) == "uri_too_long"


def test_malformed_http_is_400_in_the_error_shape(server):
    with _connect(server) as sock:
        sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\nthis is no header\r\n\r\n")
        status, _, body = _answer(sock)
    assert status == 400 and _code(body) == "bad_request"


def test_a_websocket_message_over_the_limit_gets_the_error_frame_and_close_1009(server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server['port']}/v1/stream", max_size=None, open_timeout=20,
                 additional_headers={"Authorization": f"Bearer {server['key']}"}) as websocket:
        websocket.send(json.dumps({"type": "synthesize", "text": "a" * (1024 * 1024)}))  # 1 MiB of text and JSON
        frame = json.loads(websocket.recv(timeout=20))
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=20)
    assert _code(frame) == "message_too_large" and "65536 bytes" in frame["error"]["message"]  # WS_MAX_MESSAGE_BYTES
    assert closed.value.rcvd.code == 1009


def test_a_websocket_message_within_the_limit_is_served(server):
    from websockets.sync.client import connect

    with connect(f"ws://127.0.0.1:{server['port']}/v1/stream", max_size=None, open_timeout=20,
                 additional_headers={"Authorization": f"Bearer {server['key']}"}) as websocket:
        websocket.send(json.dumps({"type": "synthesize", "text": "Hello.", "padding": " " * 60_000}))
        assert json.loads(websocket.recv(timeout=20))["type"] == "start"
