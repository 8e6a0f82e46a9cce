"""The API documentation: the OpenAPI schema at /v1/schema is valid and describes every endpoint, /docs loads
everything it needs from this server (offline), and a fuzz run of the schema against a running server finds no
server error and no error answer outside the one error shape."""
import collections
import http.client
import json
import re
from html.parser import HTMLParser

import pytest
import schemathesis
import yaml
from django.core.management import call_command
from django.urls import URLPattern, URLResolver, get_resolver
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.generation.meta import TestPhase
from schemathesis.generation.modes import GenerationMode

from callwaiting.openapi import ERRORS, WEBSOCKET_ERRORS
from tests.live import ROOT, start_server


# --- the schema, generated in-process -------------------------------------------------------------------------

@pytest.fixture(scope="module")
def generated_schema(tmp_path_factory) -> dict:
    """drf-spectacular's own validation (the OpenAPI 3 JSON schema), failing on any warning, as CI would run it."""
    path = tmp_path_factory.mktemp("schema") / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(path))
    return yaml.safe_load(path.read_text())


def _v1_routes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _v1_routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern) and route.lstrip("^").startswith("v1/") and route != "v1/schema":
            route = re.sub(r"\(\?P<(\w+)>[^)]*\)", r"{\1}", route.lstrip("^").rstrip("$"))  # re_path's groups
            yield "/" + re.sub(r"<(?:\w+:)?(\w+)>", r"{\1}", route)


def test_the_schema_is_valid_and_documents_every_v1_endpoint(generated_schema):
    assert generated_schema["openapi"].startswith("3.")
    assert set(_v1_routes(get_resolver().url_patterns)) == set(generated_schema["paths"])
    assert not any(path.startswith("/admin") for path in generated_schema["paths"])


def test_synthesize_is_documented_as_its_view_checks_it(generated_schema):
    operation = generated_schema["paths"]["/v1/synthesize"]["post"]
    assert operation["security"] == [{"ApiKey": []}]
    request = generated_schema["components"]["schemas"]["SynthesizeRequest"]["properties"]
    assert {"text", "ssml", "voice_id", "language", "streaming", "speed", "format", "sample_rate"} <= set(request)
    format_ref = request["format"].get("$ref") or request["format"]["allOf"][0]["$ref"]
    formats = generated_schema["components"]["schemas"][format_ref.rsplit("/", 1)[-1]]["enum"]
    assert set(formats) == {"wav", "pcm", "mulaw", "alaw", "mp3", "opus", "flac"}
    assert set(operation["responses"]["200"]["content"]) == {
        "audio/wav", "audio/L16", "audio/basic", "audio/x-alaw-basic", "audio/mpeg", "audio/ogg", "audio/flac"}
    assert operation["responses"]["200"]["content"]["audio/wav"]["schema"] == {"type": "string", "format": "binary"}
    assert [p["name"] for p in operation["parameters"]] == ["X-Request-ID"]
    assert operation["requestBody"]["content"]["application/json"]["examples"]


def test_the_openai_endpoint_is_documented_in_openais_shape(generated_schema):
    operation = generated_schema["paths"]["/v1/audio/speech"]["post"]
    assert operation["security"] == [{"ApiKey": []}]
    request = generated_schema["components"]["schemas"]["OpenAISpeechRequest"]["properties"]
    assert {"model", "input", "voice", "response_format", "speed", "instructions"} <= set(request)
    assert set(operation["responses"]["200"]["content"]) == {
        "audio/mpeg", "audio/ogg", "audio/aac", "audio/flac", "audio/wav", "audio/L16"}
    assert [p["name"] for p in operation["parameters"]] == ["X-Request-ID"]


def test_every_error_is_the_one_error_shape_with_an_example_of_each_code(generated_schema):
    error = generated_schema["components"]["schemas"]["Error"]
    assert error["properties"]["error"] == {"$ref": "#/components/schemas/ErrorDetail"}
    for path, operations in generated_schema["paths"].items():
        for method, operation in operations.items():
            for status, response in operation["responses"].items():
                if int(status) < 400 or path == "/v1/health":
                    continue
                content = response["content"]["application/json"]
                assert content["schema"] == {"$ref": "#/components/schemas/Error"}, (path, method, status)
                for name, example in content["examples"].items():
                    code = example["value"]["error"]["code"]
                    assert ERRORS[code][0] == int(status), (path, method, code)


# Where the code base names an error code: raising it, failing a job with it, a worker's reply, a refusal.
_RAISED_CODE = re.compile(
    r'(?:ApiError|DispatchError|KeyRejected|KeyAuthenticationFailed|error_response|error_body|_fail)\(\s*"([a-z_]+)"'
    r'|\bcode="([a-z_]+)"|refusal = \("([a-z_]+)"'
)


def test_every_error_code_the_code_raises_is_documented():
    from callwaiting.errors import _DRF_CODES
    from synthesis.dispatch import _CLIENT_ERROR_CODES

    raised = set(_DRF_CODES.values()) | set(_CLIENT_ERROR_CODES)
    for app in ("callwaiting", "synthesis", "tenants", "voices"):
        for source in (ROOT / app).rglob("*.py"):
            raised |= {next(filter(None, match.groups())) for match in _RAISED_CODE.finditer(source.read_text())}
    assert {"voice_not_found", "worker_lost", "invalid_api_key", "too_many_queued"} <= raised  # the scan works
    assert raised - set(ERRORS) - set(WEBSOCKET_ERRORS) == set()


def test_security_schemes_tenant_key_and_operator_token(generated_schema):
    schemes = generated_schema["components"]["securitySchemes"]
    assert schemes["ApiKey"]["scheme"] == "bearer" and schemes["OperatorToken"]["scheme"] == "bearer"
    paths = generated_schema["paths"]
    assert paths["/v1/metrics"]["get"]["security"] == [{"OperatorToken": []}]
    assert paths["/v1/health"]["get"]["security"] == [{}]
    assert paths["/v1/voices/upload"]["post"]["security"] == [{"ApiKey": []}]
    upload = paths["/v1/voices/upload"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]["$ref"]
    audio_file = generated_schema["components"]["schemas"][upload.rsplit("/", 1)[1]]["properties"]["audio_file"]
    assert audio_file["format"] == "binary"


def test_the_websocket_protocol_is_in_the_description(generated_schema):
    description = generated_schema["info"]["description"]
    assert "/v1/stream" in description
    assert '{"type": "cancel"}' in description and "4429" in description
    assert "| 404 | " in description and "`voice_not_found`" in description


# --- the running service --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """The service with eSpeak alone (its voices only, and it is the cloning engine): XTTS weights are absent here,
    so XTTS voices would answer their designed 503s (engine or voice unavailable), which are not what the fuzz
    run looks for."""
    data_dir = tmp_path_factory.mktemp("api-docs")
    shipped = json.loads((ROOT / "config" / "voices.json").read_text())["preloaded_voices"]
    voices = data_dir / "voices.json"
    voices.write_text(json.dumps({"preloaded_voices": {
        voice_id: voice for voice_id, voice in shipped.items() if voice["engine"] == "espeak"}}))
    yield from start_server(
        data_dir, TTS_ENGINES="espeak", TTS_CLONING_ENGINE="espeak", TTS_VOICES_CONFIG=str(voices),
        METRICS_TOKEN="op-token",
    )


def _get(server, path: str, headers=None) -> http.client.HTTPResponse:
    connection = http.client.HTTPConnection("127.0.0.1", server["port"], timeout=30)
    connection.request("GET", path, headers=headers or {})
    response = connection.getresponse()
    response.body = response.read()
    connection.close()
    return response


def test_the_schema_is_served_without_a_key_as_json_and_yaml(server):
    response = _get(server, "/v1/schema")
    assert response.status == 200 and response.getheader("Content-Type").startswith("application/vnd.oai.openapi+json")
    schema = json.loads(response.body)
    assert "/v1/synthesize" in schema["paths"] and schema["info"]["title"] == "CallWaiting TTS API"
    as_yaml = _get(server, "/v1/schema?format=yaml")
    assert as_yaml.status == 200 and yaml.safe_load(as_yaml.body) == schema


class _Assets(HTMLParser):
    def __init__(self):
        super().__init__()
        self.urls = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "script" and attrs.get("src"):
            self.urls.append(attrs["src"])
        if tag == "link" and attrs.get("href"):
            self.urls.append(attrs["href"])


@pytest.mark.parametrize("page", ["/docs", "/docs/redoc"])
def test_the_docs_load_every_asset_from_this_server(server, page):
    response = _get(server, page)
    assert response.status == 200 and response.getheader("Content-Type").startswith("text/html")
    html = response.body.decode()
    assert "/v1/schema" in html
    parser = _Assets()
    parser.feed(html)
    assert any(url.endswith(".js") for url in parser.urls)
    for url in parser.urls:
        assert url.startswith("/static/"), url  # from this server: no CDN, works offline
        asset = _get(server, url)
        assert asset.status == 200 and len(asset.body) > 100, url
        assert asset.getheader("Content-Type").split(";")[0] in {"text/javascript", "application/javascript", "text/css",
                                                                 "image/png"}, url
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", html)
    if page == "/docs":
        assert '"validatorUrl": null' in html  # no badge fetched from validator.swagger.io


def test_a_missing_static_file_is_a_404_in_the_error_shape(server):
    response = _get(server, "/static/drf_spectacular_sidecar/nope.js")
    assert response.status == 404 and json.loads(response.body)["error"]["code"] == "not_found"


@pytest.mark.parametrize("path", ["/static/../callwaiting/settings.py", "/static/admin/../../../../etc/passwd",
                                  "/static/..%2f..%2fcallwaiting%2fsettings.py"])
def test_a_static_path_out_of_the_static_folders_is_a_400_not_a_server_error(server, path):
    """Found by probing the static files this server now serves: Django's finders refuse such a path with
    SuspiciousFileOperation, which escaped its static handler as a 500."""
    response = _get(server, path)
    assert response.status == 400 and json.loads(response.body)["error"]["code"] == "bad_request"
    assert b"SECRET_KEY" not in response.body and b"root:" not in response.body


# --- the fuzz run ---------------------------------------------------------------------------------------------

@schemathesis.check
def one_error_shape(ctx, response, case):
    """Every 4xx and 5xx answer is {"error": {"code": "...", "message": "..."}} with non-empty strings."""
    if response.status_code < 400:
        return None
    try:
        body = json.loads(response.content)
    except ValueError:
        raise AssertionError(f"{response.status_code} answer is not JSON: {response.content[:200]!r}") from None
    error = body.get("error") if isinstance(body, dict) else None
    assert isinstance(body, dict) and set(body) == {"error"} and isinstance(error, dict), body
    assert set(error) == {"code", "message"}, body
    assert isinstance(error["code"], str) and error["code"] and isinstance(error["message"], str), body
    return True


def _fuzz(operation, mode, server, statuses: collections.Counter, **fixed) -> str | None:
    """Up to FUZZ_EXAMPLES requests generated for `operation` in `mode` (`fixed`: as_strategy's fixed parts or
    phase); the first failure, or None. Counts the statuses answered per operation in `statuses`."""
    from schemathesis.checks import not_a_server_error

    @given(case=operation.as_strategy(generation_mode=mode, **fixed))
    @settings(max_examples=FUZZ_EXAMPLES, deadline=None, derandomize=True, database=None,
              phases=[Phase.generate], suppress_health_check=list(HealthCheck))
    def run(case):
        response = case.call_and_validate(
            headers={"Authorization": f"Bearer {server['key']}"}, timeout=30, checks=[not_a_server_error, one_error_shape]
        )
        statuses[operation.label, response.status_code] += 1

    try:
        run()
    except Unsatisfiable:
        return None  # nothing in this operation can be made invalid (GET /v1/health has no parameters)
    except Exception as exc:  # noqa: BLE001 - reported below, with the operation and the failing request
        return f"{operation.label} ({mode.value}, {fixed}): {exc}"
    return None


# Per operation and mode (valid data, and data the schema forbids): bounded for a busy 2-CPU machine. No stateful
# phase: the operations do not hand each other ids beyond voice_id, which the examples already cover.
FUZZ_EXAMPLES = 20


def test_fuzzing_the_schema_finds_no_server_error_and_only_the_error_shape(server):
    schema = schemathesis.openapi.from_url(f"http://127.0.0.1:{server['port']}/v1/schema")
    operations = [result.ok() for result in schema.get_all_operations()]
    assert len(operations) >= 8
    statuses = collections.Counter()
    runs = [
        (operation, mode, {}) for operation in operations for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    ] + [
        # The schema's own examples (a request that makes speech), and the voice endpoints on a voice that exists.
        (operation, GenerationMode.POSITIVE, {"phase": TestPhase.EXAMPLES}) for operation in operations
    ] + [
        (operation, GenerationMode.POSITIVE, {"path_parameters": {"voice_id": "default"}})
        for operation in operations if "{voice_id}" in operation.path
    ]
    failures = [failure for operation, mode, fixed in runs if (failure := _fuzz(operation, mode, server, statuses, **fixed))]
    assert not failures, "\n\n".join(failures)
    # The run reached the service's real work, not only its validation: speech was made and a voice was listed.
    assert statuses["POST /v1/synthesize", 200] and statuses["GET /v1/voices", 200], statuses
