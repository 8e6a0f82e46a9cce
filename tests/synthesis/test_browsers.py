"""Browsers: CORS on the API for configured origins, and the WebSocket token (POST /v1/stream/token) that lets a
page open /v1/stream without a key in a header or a URL. In-process through the ASGI application, then over TCP
against a real daphne."""
import asyncio
import hashlib
import http.client
import json
import threading
import time

import pytest
from django.db import connection as db_connection
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.core.cache import cache

from tenants import keys
from tenants.models import UsageRecord
from tenants.selectors import KeyRejected
from tenants.services import api_key_issue, api_key_revoke, stream_token_issue, stream_token_redeem
from tests.asgi import AsgiClient
from tests.factories import TenantFactory, issue_key
from tests.live import start_server
from tests.synthesis.test_websocket import _closed_with_error, _utterance, run, tenant  # noqa: F401  (tenant: a fixture)

TIMEOUT = 20
APP_ORIGIN = "https://app.example.com"
OTHER_ORIGIN = "https://evil.example.net"


@pytest.fixture
def cors(settings):
    settings.CORS_ALLOWED_ORIGINS = [APP_ORIGIN]


def _preflight_headers(origin: str, method: str = "POST") -> dict:
    return {"Origin": origin, "Access-Control-Request-Method": method,
            "Access-Control-Request-Headers": "authorization,content-type,x-request-id"}


def _listed(header: str) -> set[str]:
    return {item.strip().lower() for item in header.split(",")}


# --- CORS --------------------------------------------------------------------------------------------------------
def test_a_preflight_for_synthesize_from_an_allowed_origin_is_answered_without_a_key(cors, asgi):
    response = run(AsgiClient().request, "OPTIONS", "/v1/synthesize", headers=_preflight_headers(APP_ORIGIN))
    assert response.status == 200
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    assert _listed(response.headers["access-control-allow-headers"]) == {"authorization", "content-type", "x-request-id"}
    assert "POST" in response.headers["access-control-allow-methods"]
    assert "access-control-allow-credentials" not in response.headers  # keys travel in a header, not cookies
    assert "origin" in _listed(response.headers["vary"])


def test_the_seed_readme_react_call_works_from_an_allowed_origin(cors, asgi):
    """fetch('/v1/synthesize', {Authorization, form body, streaming: 'true'}) then response.blob()."""
    response = run(asgi.post, "/v1/synthesize", headers={"Origin": APP_ORIGIN},
                   form={"text": "Hello from the browser", "voice_id": "default", "streaming": "true"})
    assert response.status == 200 and response.body[:4] == b"RIFF"
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    exposed = _listed(response.headers["access-control-expose-headers"])
    assert {"x-request-id", "x-sample-rate", "x-worker-id", "retry-after"} <= exposed
    assert response.headers["x-request-id"] and response.headers["x-sample-rate"] == "22050"


def test_an_error_answer_is_readable_by_the_allowed_page(cors, live_voices):
    response = run(AsgiClient(key="sk_test_" + "a" * 44).post, "/v1/synthesize", headers={"Origin": APP_ORIGIN},
                   json={"text": "Hello"})
    assert response.status == 401 and response.json()["error"]["code"] == "invalid_api_key"
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN


def test_another_origin_gets_no_cors_headers(cors, asgi):
    preflight = run(AsgiClient().request, "OPTIONS", "/v1/synthesize", headers=_preflight_headers(OTHER_ORIGIN))
    assert not any(name.startswith("access-control-") for name in preflight.headers)
    response = run(asgi.get, "/v1/voices", headers={"Origin": OTHER_ORIGIN})
    assert response.status == 200 and "access-control-allow-origin" not in response.headers


def test_no_origin_is_allowed_by_default(asgi):
    assert django_settings.CORS_ALLOWED_ORIGINS == []
    preflight = run(AsgiClient().request, "OPTIONS", "/v1/synthesize", headers=_preflight_headers(APP_ORIGIN))
    assert not any(name.startswith("access-control-") for name in preflight.headers)


@pytest.mark.parametrize("path", ["/admin/", "/admin/login/"])
def test_the_admin_never_answers_cross_origin(cors, live_voices, path):
    for method, headers in (("OPTIONS", _preflight_headers(APP_ORIGIN, "GET")), ("GET", {"Origin": APP_ORIGIN})):
        response = run(AsgiClient().request, method, path, headers=headers)
        assert not any(name.startswith("access-control-") for name in response.headers), (method, response.headers)


# --- the WebSocket token: issuance ----------------------------------------------------------------------------------
def _cache_contents() -> bytes:
    """Every key and value the cache holds, as bytes (local memory or Redis)."""
    if django_settings.REDIS_URL:
        client = cache._cache.get_client()
        return b"".join(key + (client.get(key) or b"") for key in client.keys("*"))
    return b"".join(key.encode() + value for key, value in cache._cache.items())


def _issue(client: AsgiClient, **kwargs):
    return run(client.post, "/v1/stream/token", **kwargs)


def test_a_token_is_issued_for_a_synthesize_key_and_stored_only_hashed(cors, asgi):
    response = _issue(asgi, headers={"Origin": APP_ORIGIN})
    assert response.status == 200, response.body
    body = response.json()
    token = body["token"]
    assert token.startswith("wst_") and not token.startswith("sk_")
    assert body == {"token": token, "expires_in": 60, "url": f"/v1/stream?token={token}"}
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["access-control-allow-origin"] == APP_ORIGIN
    stored = _cache_contents()
    assert token.encode() not in stored and token[4:].encode() not in stored
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored


def test_a_key_without_the_synthesize_scope_gets_403_at_issuance(live_voices):
    response = _issue(AsgiClient(key=issue_key(scopes=["voices"])))
    assert response.status == 403 and response.json()["error"]["code"] == "missing_scope"
    assert _issue(AsgiClient()).status == 401


def test_issuance_counts_against_the_tenants_rate_limit(live_voices):
    client = AsgiClient(key=issue_key(TenantFactory(requests_per_minute=2)))
    assert [_issue(client).status for _ in range(2)] == [200, 200]
    refused = _issue(client)
    assert refused.status == 429 and refused.json()["error"]["code"] == "rate_limited"
    assert int(refused.headers["retry-after"]) >= 1


# --- the WebSocket token: connecting -------------------------------------------------------------------------------
def _application():
    from callwaiting.asgi import application

    return application


async def _open(path: str, origin: str = APP_ORIGIN) -> WebsocketCommunicator:
    ws = WebsocketCommunicator(_application(), path, headers=[(b"origin", origin.encode())])
    connected, _ = await ws.connect(TIMEOUT)
    assert connected
    return ws


def _new_token(client: AsgiClient) -> str:
    response = _issue(client)
    assert response.status == 200, response.body
    return response.json()["url"]


def test_the_browser_flow_issue_connect_speak(asgi, engine_tap):
    url = _new_token(asgi)

    async def scenario():
        ws = await _open(url)
        await ws.send_json_to({"type": "synthesize", "text": "Hello from a web page"})
        start, frames, done = await _utterance(ws)
        await ws.disconnect(timeout=TIMEOUT)
        return start, frames, done

    start, frames, done = run(scenario)
    assert b"".join(frames) == engine_tap.pcm and len(engine_tap.pcm) > 0
    assert done["type"] == "done" and done["request_id"] == start["request_id"]
    row = UsageRecord.objects.get(request_id=start["request_id"])
    assert row.status == "success" and row.tenant == asgi.tenant  # billed to the key that asked for the token


def test_a_token_opens_one_connection_only(asgi, engine_tap):
    url = _new_token(asgi)

    async def scenario():
        first = await _open(url)
        # The handshake is accepted before the token is checked (each connection in its own thread), so the
        # first connection speaks once to show it has redeemed the token before the second one tries it.
        await first.send_json_to({"type": "synthesize", "text": "Mine."})
        assert (await _utterance(first))[2]["type"] == "done"
        refused = await _closed_with_error(await _open(url), 4401)
        await first.send_json_to({"type": "synthesize", "text": "Still mine."})
        assert (await _utterance(first))[2]["type"] == "done"  # the first connection is unaffected
        await first.disconnect(timeout=TIMEOUT)
        return refused

    assert run(scenario) == "invalid_stream_token"


def test_two_connections_racing_with_one_token_exactly_one_wins(asgi, engine_tap):
    url = _new_token(asgi)

    async def scenario():
        sockets = await asyncio.gather(_open(url), _open(url))
        for ws in sockets:  # the loser was refused at its handshake; the winner answers this with speech
            await ws.send_json_to({"type": "synthesize", "text": "Who won?"})
        firsts = [await ws.receive_json_from(TIMEOUT) for ws in sockets]
        for ws in sockets:
            await ws.disconnect(timeout=TIMEOUT)
        return firsts

    firsts = run(scenario)
    assert sorted(first.get("type", "error") for first in firsts) == ["error", "start"]
    assert [first["error"]["code"] for first in firsts if "error" in first] == ["invalid_stream_token"]


def test_redeeming_races_between_threads_leave_one_winner(tenant):
    """The cache's own atomicity, as several web processes (threads here) would race on Redis."""
    issued = api_key_issue(tenant=tenant, kind="test", scopes=["synthesize"])
    token = stream_token_issue(api_key=issued.api_key).token
    barrier, results = threading.Barrier(8), []

    def redeem():
        barrier.wait()
        try:
            results.append(stream_token_redeem(token=token).pk)
        except KeyRejected as rejected:
            results.append(rejected.code)
        finally:
            db_connection.close()  # this thread's pooled PostgreSQL connection goes back to the pool

    threads = [threading.Thread(target=redeem) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIMEOUT)
    assert sorted(results, key=str) == sorted([issued.api_key.pk] + ["invalid_stream_token"] * 7, key=str)


def test_an_expired_token_is_refused(settings, asgi):
    settings.TTS_STREAM_TOKEN_SECONDS = 1
    issued = _issue(asgi).json()
    assert issued["expires_in"] == 1
    deadline = time.monotonic() + 10
    while cache.has_key(keys.stream_token_cache_key(issued["token"])):  # the cache lets it go at its lifetime
        assert time.monotonic() < deadline, "the token outlived its lifetime"
        time.sleep(0.05)
    assert run(_refused_url, issued["url"]) == "invalid_stream_token"


def test_a_key_revoked_after_issuance_refuses_the_token(tenant):
    issued = api_key_issue(tenant=tenant, kind="test", scopes=["synthesize"])
    url = _new_token(AsgiClient(key=issued.plaintext))
    api_key_revoke(api_key=issued.api_key)
    assert run(_refused_url, url) == "api_key_revoked"


def test_a_key_revoked_while_its_token_connection_is_open_stops_it_at_the_next_utterance(tenant, engine_tap):
    issued = api_key_issue(tenant=tenant, kind="test", scopes=["synthesize"])
    url = _new_token(AsgiClient(key=issued.plaintext))

    async def scenario():
        ws = await _open(url)
        await ws.send_json_to({"type": "synthesize", "text": "Still valid."})
        assert (await _utterance(ws))[2]["type"] == "done"
        await database_sync_to_async(api_key_revoke)(api_key=issued.api_key)
        await ws.send_json_to({"type": "synthesize", "text": "Not any more."})
        return await _closed_with_error(ws, 4401)

    assert run(scenario) == "api_key_revoked"


async def _refused_url(url: str) -> str:
    return await _closed_with_error(await _open(url), 4401)


def test_a_key_is_never_accepted_as_a_token(asgi):
    assert run(_refused_url, f"/v1/stream?token={asgi.key}") == "invalid_stream_token"
    assert run(_refused_url, f"/v1/stream?api_key={asgi.key}") == "authentication_required"
    assert run(_refused_url, "/v1/stream?token=wst_" + "A" * 43) == "invalid_stream_token"


# --- over TCP, against daphne ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def browser_server(tmp_path_factory):
    data_dir = tmp_path_factory.mktemp("browser-server")
    access_log = data_dir / "access.log"
    for server in start_server(data_dir, server_args=("--access-log", str(access_log)), CORS_ALLOWED_ORIGINS=APP_ORIGIN):
        yield {**server, "access_log": access_log, "daphne_log": data_dir / "daphne.log"}


def _http(server, method: str, path: str, headers: dict, body: bytes | None = None):
    connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=TIMEOUT)
    connection.request(method, path, body=body, headers=headers)
    response = connection.getresponse()
    payload = response.read()
    connection.close()
    return response, payload


def test_over_tcp_the_preflight_passes_the_servers_early_checks_and_the_page_gets_audio(browser_server):
    response, _ = _http(browser_server, "OPTIONS", "/v1/synthesize", _preflight_headers(APP_ORIGIN))
    assert response.status == 200 and response.getheader("Access-Control-Allow-Origin") == APP_ORIGIN
    response, audio = _http(browser_server, "POST", "/v1/synthesize", {
        "Origin": APP_ORIGIN, "Authorization": f"Bearer {browser_server['key']}",
        "Content-Type": "application/x-www-form-urlencoded",
    }, b"text=Hello+from+a+page&voice_id=default&streaming=true")
    assert response.status == 200 and audio[:4] == b"RIFF"
    assert response.getheader("Access-Control-Allow-Origin") == APP_ORIGIN
    response, _ = _http(browser_server, "OPTIONS", "/v1/synthesize", _preflight_headers(OTHER_ORIGIN))
    assert response.getheader("Access-Control-Allow-Origin") is None


def test_over_tcp_a_token_opens_one_websocket_and_stays_out_of_the_logs(browser_server):
    from websockets.exceptions import ConnectionClosed
    from websockets.sync.client import connect

    response, body = _http(browser_server, "POST", "/v1/stream/token",
                           {"Origin": APP_ORIGIN, "Authorization": f"Bearer {browser_server['key']}"})
    assert response.status == 200 and response.getheader("Access-Control-Allow-Origin") == APP_ORIGIN
    issued = json.loads(body)
    url = f"ws://127.0.0.1:{browser_server['port']}{issued['url']}"
    with connect(url, origin=APP_ORIGIN, open_timeout=TIMEOUT, max_size=None) as websocket:
        websocket.send(json.dumps({"type": "synthesize", "text": "Hello from a web page."}))
        assert json.loads(websocket.recv(timeout=TIMEOUT))["type"] == "start"
        audio = b""
        while isinstance(frame := websocket.recv(timeout=TIMEOUT), bytes):
            audio += frame
        assert json.loads(frame)["type"] == "done" and len(audio) > 0

    with connect(url, origin=APP_ORIGIN, open_timeout=TIMEOUT) as websocket:
        refusal = json.loads(websocket.recv(timeout=TIMEOUT))
        with pytest.raises(ConnectionClosed) as closed:
            websocket.recv(timeout=TIMEOUT)
    assert refusal["error"]["code"] == "invalid_stream_token" and closed.value.rcvd.code == 4401

    def access_log() -> str:
        return browser_server["access_log"].read_text()

    deadline = time.monotonic() + 10
    while access_log().count("WSDISCONNECT /v1/stream") < 2:  # daphne has logged both connections
        assert time.monotonic() < deadline, access_log()
        time.sleep(0.05)
    assert "WSCONNECTING /v1/stream" in access_log()
    for log in (access_log(), browser_server["daphne_log"].read_text()):
        assert issued["token"] not in log and issued["token"][4:] not in log
