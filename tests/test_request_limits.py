"""Bodies over their route's limit and Django's own 400s, in the one error shape, as the application answers them
under any ASGI server (tests/test_server_limits.py has what the server does before the application sees a request)."""
import asyncio
import json

import pytest
from asgiref.testing import ApplicationCommunicator

from tests.factories import bearer


def _code(body: dict) -> str:
    assert set(body) == {"error"} and set(body["error"]) == {"code", "message"}, body
    return body["error"]["code"]


@pytest.mark.parametrize("kind", ["json", "form"])
def test_a_20_mb_json_or_form_body_is_413_in_the_error_shape(asgi, kind):
    fields = {"text": "x" * (20 * 1024 * 1024)}
    response = asgi.run(asgi.post, "/v1/synthesize", **{kind: fields})
    assert response.status == 413 and response.headers["content-type"] == "application/json"
    assert _code(response.json()) == "request_too_large"


def test_a_body_without_a_length_is_cut_once_it_passes_the_limit(asgi, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 100_000
    scope = asgi._scope("POST", "/v1/synthesize", None, {"Transfer-Encoding": "chunked"}, b"", "application/json")

    async def send_until_answered():
        communicator = ApplicationCommunicator(asgi.application, scope)
        sent = 0
        while communicator.output_queue.empty() and sent < 10_000_000:
            await communicator.send_input({"type": "http.request", "body": b" " * 10_000, "more_body": True})
            sent += 10_000
            await _yield()  # let the application read it
        start = await communicator.receive_output(20)
        body = await communicator.receive_output(20)
        await communicator.wait(20)
        return sent, start, body

    sent, start, body = asgi.run(send_until_answered)
    assert start["status"] == 413 and _code(json.loads(body["body"])) == "request_too_large"
    assert sent < 10_000_000  # answered long before the client was done


async def _yield():
    for _ in range(5):
        await asyncio.sleep(0)


def test_a_body_over_djangos_limit_is_413_and_not_an_html_page(api_client, api_key, settings):
    """Django's own check (DATA_UPLOAD_MAX_MEMORY_SIZE), reached when the body was not refused before."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    response = api_client.post("/v1/synthesize", {"text": "x" * 5000}, format="json", **bearer(api_key))
    assert response.status_code == 413 and response["Content-Type"] == "application/json"
    assert _code(response.json()) == "request_too_large"


def test_too_many_form_fields_is_400_in_the_error_shape(api_client, api_key, settings):
    settings.DATA_UPLOAD_MAX_NUMBER_FIELDS = 10
    body = "&".join(f"f{n}=1" for n in range(50))
    response = api_client.post("/v1/synthesize", body, content_type="application/x-www-form-urlencoded",
                               **bearer(api_key))
    assert response.status_code == 400 and _code(response.json()) == "too_many_fields"


def test_a_request_for_another_host_is_400_in_the_error_shape(client, settings):
    settings.ALLOWED_HOSTS = ["api.example.com"]
    response = client.get("/v1/health", HTTP_HOST="evil.example.com")
    assert response.status_code == 400 and _code(response.json()) == "bad_request"
