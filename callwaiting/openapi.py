"""The API's OpenAPI schema (/v1/schema, drf-spectacular) and interactive docs (/docs): the pieces every view
shares, so a view documents itself with one decorator line:

    @extend_schema(summary="...", request=MySerializer, responses={200: MyResponseSerializer, **error_responses("voice_not_found")})

- the one error shape as the component `Error`, and `error_responses(*codes)`: the documented error responses
  of a view (grouped by HTTP status, one example per code), with the errors of key authentication, scope, rate
  limit and outages added for tenant views;
- the security schemes: `ApiKey` (tenant key, tenants.authentication.ApiKeyAuthentication) and `OperatorToken`
  (METRICS_TOKEN, tenants.authentication.OperatorAuthentication), picked up from each view's authenticators;
- the schema's description: how to authenticate, the error shape, every error code, and the WebSocket protocols
  (WEBSOCKET_APIS: /v1/stream from the docstring of synthesis/consumers.py), which OpenAPI cannot describe as
  operations.

Views and serializers stay the source: fields, choices and limits come from the serializers, so a field added
there is documented without touching this module.
"""
import importlib
import threading

from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.renderers import OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2
from drf_spectacular.utils import OpenApiExample, OpenApiResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.views import SpectacularAPIView
from rest_framework import serializers
from rest_framework.response import Response

# Every error code the HTTP API answers with: (HTTP status, an example message). Codes of the WebSocket API
# alone are in its protocol description (WEBSOCKET_ERRORS). tests/test_api_docs.py checks that every code the
# code base raises is one of them: a new code is documented here.
ERRORS: dict[str, tuple[int, str]] = {
    # the request itself
    "invalid_request": (400, "speed: Ensure this value is less than or equal to 2.0."),
    "malformed_request": (400, "JSON parse error - Expecting value: line 1 column 1 (char 0)"),
    "bad_request": (400, "The request is malformed."),
    "too_many_fields": (400, "The number of GET/POST parameters exceeded settings.DATA_UPLOAD_MAX_NUMBER_FIELDS."),
    "invalid_request_id": (400, "X-Request-ID must be a UUID."),
    "empty_text": (400, "Nothing to say: text (or the text inside ssml) is empty."),
    "invalid_ssml": (400, "SSML is not well-formed XML: mismatched tag: line 1, column 20"),
    # key authentication (every tenant endpoint)
    "authentication_required": (401, "An API key is required: Authorization: Bearer <api_key>."),
    "malformed_authorization": (401, "Authorization header must be 'Bearer <api_key>'."),
    "malformed_api_key": (401, "API key is malformed; expected sk_<prod|test|admin>_..."),
    "invalid_api_key": (401, "API key is not valid."),
    "api_key_revoked": (401, "API key has been revoked."),
    "api_key_expired": (401, "API key has expired."),
    "tenant_suspended": (401, "Tenant is suspended."),
    "quota_exceeded": (402, "Monthly character quota of 1000000 reached (999990 used; this request needs 24)."),
    "missing_scope": (403, "This API key lacks the 'synthesize' scope."),
    "operator_only": (403, "/v1/metrics shows the whole service and is for its operators (Authorization: Bearer "
                           "<METRICS_TOKEN>, or a staff session); a tenant's own usage is at /v1/tenant/stats."),
    "permission_denied": (403, "You do not have permission to perform this action."),
    "voice_preloaded": (403, "Preloaded voices cannot be changed or deleted."),
    "not_found": (404, "No such endpoint: /v1/voice"),
    "voice_not_found": (404, "No voice 'nova' for this tenant."),
    "method_not_allowed": (405, 'Method "GET" not allowed.'),
    "not_acceptable": (406, "Could not satisfy the request Accept header."),
    "voice_not_ready": (409, "Voice 'my-voice' is processing"),
    "voice_exists": (409, "This tenant already has a voice 'my-voice'."),
    "request_id_conflict": (409, "Request id 3f2c... was used for a different request; a retry must send the same "
                                 "request, anything else a new id."),
    "request_in_progress": (409, "Request 3f2c... is being served already."),
    "too_many_attempts": (409, "Request 3f2c... was tried 3 times, the most a request id may be; send a new id."),
    "text_too_long": (413, "Text has 5210 characters; the limit is 5000."),
    "audio_too_long": (413, "The pauses alone make 1200 s of audio; a request may make at most 900 s "
                            "(TTS_MAX_AUDIO_SECONDS)."),
    "request_too_large": (413, "Request bodies on /v1/synthesize are limited to 2621440 bytes."),
    "upload_too_large": (413, "Uploads are limited to 10551296 bytes."),
    "uri_too_long": (414, "The request line is over 16384 bytes."),
    "unsupported_media_type": (415, 'Unsupported media type "text/plain" in request.'),
    "unsupported_language": (422, "Voice 'default' speaks en, not 'de'."),
    "engine_cannot_clone": (422, "The espeak engine cannot clone voices."),
    "invalid_voice_settings": (422, "The voice's engine settings are not valid for its engine."),
    "invalid_audio": (422, "The voice's reference audio could not be decoded."),
    "rate_limited": (429, "Request was throttled. Expected available in 12 seconds."),
    "too_many_streams": (429, "This tenant already has 50 streams in flight."),
    "headers_too_large": (431, "The request's header fields are over 16384 bytes together."),
    "internal_error": (500, "The server failed on this request; it has been logged."),
    "worker_failed": (503, "The model worker failed on this job."),
    "service_unavailable": (503, "Redis (rate limits, model-worker registry, job queue) cannot be reached; try again "
                                 "shortly."),
    "voice_unavailable": (503, "Voice 'nova' is unavailable: reference audio is missing"),
    "engine_unavailable": (503, "Voice 'nova': no live model worker serves the 'xtts' engine"),
    "engine_loading": (503, "Voice 'nova': the xtts engine is loading."),
    "no_worker_available": (503, "No model worker took the job within 5 s; try again shortly."),
    "queue_unavailable": (503, "The job queue (Redis) cannot be reached; try again shortly."),
    "worker_timeout": (503, "The model worker did not answer for 30 s."),
    "worker_lost": (503, "The model worker serving this request stopped; try again."),
    "stream_not_found": (404, "No live Twilio stream or call CA0123... for this tenant."),
}

WEBSOCKET_ERRORS = (
    "binary_frame", "unknown_message_type", "too_many_queued", "message_too_large",
    "invalid_stream_token",  # /v1/stream?token=... (POST /v1/stream/token): unknown, expired or used
)

# What any endpoint behind a tenant's API key may answer, whatever it does: the key, its scope, the tenant's rate
# limit, an outage of Redis or the database.
KEY_ERRORS = (
    "authentication_required", "malformed_authorization", "malformed_api_key", "invalid_api_key", "api_key_revoked",
    "api_key_expired", "tenant_suspended", "missing_scope", "rate_limited", "service_unavailable",
)


class ErrorDetailSerializer(serializers.Serializer):
    code = serializers.CharField(help_text="Stable, machine-readable: switch on it (the codes are listed in the "
                                           "API description).")
    message = serializers.CharField(help_text="For people: what went wrong and what to do about it.")


class ErrorSerializer(serializers.Serializer):
    """The one error shape of this API: every 4xx and 5xx answer (and the WebSocket API's error frame)."""

    error = ErrorDetailSerializer()


def error_responses(*codes: str, key: bool = True) -> dict[int, OpenApiResponse]:
    """The documented error responses of an operation: `codes` (keys of ERRORS), plus KEY_ERRORS unless key=False
    (public endpoints), one response per HTTP status with an example of each of its codes. Merge it into
    extend_schema's `responses`."""
    wanted = dict.fromkeys([*(KEY_ERRORS if key else ()), *codes])
    by_status: dict[int, list[str]] = {}
    for code in wanted:
        by_status.setdefault(ERRORS[code][0], []).append(code)
    return {
        status: OpenApiResponse(
            ErrorSerializer,
            description=" | ".join(f"`{code}`" for code in status_codes),
            examples=[
                OpenApiExample(code, value={"error": {"code": code, "message": ERRORS[code][1]}}, response_only=True,
                               status_codes=[str(status)])
                for code in status_codes
            ],
        )
        for status, status_codes in sorted(by_status.items())
    }


def binary_response(description: str) -> OpenApiResponse:
    """An audio (or other non-JSON) body: described in words, its bytes are not a JSON schema."""
    return OpenApiResponse(OpenApiTypes.BINARY, description=description)


class ApiKeyScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.ApiKeyAuthentication"
    name = "ApiKey"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "bearerFormat": "sk_<prod|test|admin>_...",
            "description": "A tenant's API key: `Authorization: Bearer sk_...`. Each endpoint needs a scope "
                           "(synthesize, voices, upload) the key must carry; keys are made in the portal or admin.",
        }


class OperatorTokenScheme(OpenApiAuthenticationExtension):
    target_class = "tenants.authentication.OperatorAuthentication"
    name = "OperatorToken"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "The operator credential, `Authorization: Bearer <METRICS_TOKEN>` (a setting of the "
                           "service), or a Django staff session. A tenant's API key never opens these endpoints.",
        }


_INTRODUCTION = """\
Streaming text-to-speech for phone-call products: REST endpoints below, and WebSocket APIs for live calls
(described after the error codes).

**Authentication.** Every endpoint but `/v1/health` (and this documentation) needs a tenant API key:
`Authorization: Bearer sk_...` (click *Authorize*). `/v1/metrics` needs the operator token instead.

**Errors** all have one shape, with the HTTP status telling the class of failure and `code` the exact reason:

```json
{"error": {"code": "voice_not_found", "message": "No voice 'nova' for this tenant."}}
```

| status | codes |
|---|---|
"""


def _error_table() -> str:
    by_status: dict[int, list[str]] = {}
    for code, (status, _) in ERRORS.items():
        by_status.setdefault(status, []).append(code)
    return "".join(
        f"| {status} | {', '.join(f'`{code}`' for code in codes)} |\n" for status, codes in sorted(by_status.items())
    )


# The WebSocket APIs, which OpenAPI cannot describe as operations: (path, the module whose docstring documents
# the protocol, its first line a title "...: summary"). A new WebSocket endpoint adds its line here.
WEBSOCKET_APIS = [
    ("/v1/stream", "synthesis.consumers"),
    ("/v1/twilio", "synthesis.twilio"),
]


def _websocket_section(path: str, module_name: str) -> str:
    title, _, protocol = importlib.import_module(module_name).__doc__.partition("\n")
    summary = title.split(":", 1)[-1].strip()
    return f"## WebSocket API: GET {path}\n\n{summary[:1].upper()}{summary[1:]}\n\n```text\n{protocol.strip()}\n```\n"


def api_description() -> str:
    return f"{_INTRODUCTION}{_error_table()}\n" + "\n".join(
        _websocket_section(path, module) for path, module in WEBSOCKET_APIS
    )


def postprocess_schema(result, generator, request, public):
    """SPECTACULAR_SETTINGS' postprocessing hook: the description above (built here, once the apps are loaded)."""
    result["info"]["description"] = api_description()
    return result


class SchemaView(SpectacularAPIView):
    """GET /v1/schema: the OpenAPI 3 schema, JSON like the rest of the API (YAML with ?format=yaml or
    Accept: application/yaml). No key needed. Generated once per process: it depends on the code only."""

    renderer_classes = [OpenApiJsonRenderer, OpenApiJsonRenderer2, OpenApiYamlRenderer, OpenApiYamlRenderer2]
    throttle_classes: list = []
    _schema: dict | None = None
    _lock = threading.Lock()

    def _get_schema_response(self, request):
        with self._lock:
            if SchemaView._schema is None:
                SchemaView._schema = self.generator_class(urlconf=self.urlconf).get_schema(request=None, public=True)
        return Response(SchemaView._schema)


__all__ = [
    "ERRORS", "KEY_ERRORS", "ErrorSerializer", "SchemaView", "binary_response", "error_responses",
    "postprocess_schema",
]
