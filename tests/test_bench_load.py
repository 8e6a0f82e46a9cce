"""The load test's reconciliation (bench/load.py): fed made-up requests and usage rows, it must find what a
billing bug would look like. No server, no database."""
import importlib.util
import uuid

import pytest

from tests.live import ROOT


@pytest.fixture(scope="module")
def load():
    spec = importlib.util.spec_from_file_location("bench_load", ROOT / "bench" / "load.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _request(load, outcome: str, behaviour: str = "complete", code: str = "", pcm_bytes: int = 88_200):
    return load.Sent(
        request_id=str(uuid.uuid4()), tenant="acme", protocol="ws", behaviour=behaviour, characters=57,
        outcome=outcome, error_code=code, audio_bytes=pcm_bytes, sample_rate=22050,
    )


def _row(load, request, status: str, code: str = "", characters: int = 57, seconds: float | None = None):
    billed = request.audio_seconds if seconds is None else seconds
    return load.Row(request.request_id, request.tenant, status, code, characters, billed)


def test_rows_that_match_their_requests_reconcile(load):
    done = _request(load, "success")
    hung_up = _request(load, "disconnected", "disconnect", pcm_bytes=4410)
    refused = _request(load, "error", code="too_many_streams", pcm_bytes=0)
    throttled = _request(load, "error", code="rate_limited", pcm_bytes=0)  # refused before billing: no row
    rows = [_row(load, done, "success"), _row(load, hung_up, "client_disconnected", "client_disconnected", seconds=0.5),
            _row(load, refused, "error", "too_many_streams")]

    result = load.reconcile([done, hung_up, refused, throttled], rows)

    assert result.ok and result.matched == 3


def test_a_missing_row_is_reported_with_its_request(load):
    done, hung_up = _request(load, "success"), _request(load, "disconnected", "disconnect", pcm_bytes=4410)

    result = load.reconcile([done, hung_up], [_row(load, done, "success")])

    assert not result.ok
    assert [(request.request_id, why) for request, why in result.missing] == [
        (hung_up.request_id, "expected client_disconnected")
    ]
    assert load.kind(result.missing[0][0]) == "ws disconnect -> disconnected"


def test_wrong_status_characters_audio_and_extra_rows_are_reported(load):
    hung_up = _request(load, "disconnected", "disconnect", pcm_bytes=4410)
    overbilled = _request(load, "success")
    short = _request(load, "success")
    stranger = load.Row(str(uuid.uuid4()), "acme", "success", "", 10, 1.0)
    rows = [_row(load, hung_up, "success", seconds=0.3), _row(load, overbilled, "success", characters=114),
            _row(load, short, "success", seconds=1.5), stranger]

    result = load.reconcile([hung_up, overbilled, short], rows)

    wrong = {request.request_id: what for request, _, what in result.wrong}
    assert wrong == {
        hung_up.request_id: "status success (no code), expected client_disconnected",
        overbilled.request_id: "114 characters billed, 57 sent",
        short.request_id: "1.5000 audio seconds billed, 2.0000 received",
    }
    assert result.extra == [(stranger, "no request of the load test has this id")]

