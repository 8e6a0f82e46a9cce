
import uuid

from asgiref.sync import sync_to_async
from django.core.exceptions import ImproperlyConfigured
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiParameter, OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from callwaiting.errors import SERVICE_RETRY_AFTER, ApiError, as_api_error, error_code, exception_body
from callwaiting.openapi import binary_response, error_responses
from synthesis import metrics, twilio
from synthesis.encoders import FORMATS
from synthesis.openai_speech import OPENAI_FORMATS, OPENAI_SPEECH_DESCRIPTION, OpenAISpeechSerializer
from synthesis.selectors import service_health
from synthesis.serializers import (
    AUDIO_CONTENT_TYPES, HealthSerializer, StreamTokenSerializer, SynthesizeSerializer, TwilioCallActionSerializer,
    TwilioSpeakSerializer,
)
from synthesis.services import SynthesisSession, parse_request_id
from tenants.api import TenantApiView
from tenants.authentication import OperatorAuthentication
from tenants.permissions import IsOperator
from tenants.services import stream_token_issue


class AudioNegotiation(DefaultContentNegotiation):
    """A synthesis answers audio whatever Accept says (OpenAI's SDK sends application/octet-stream, a browser
    audio/*), so no 406: the renderer is only for errors, which are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


# One description for the 200 of every audio content type (documentation UIs show one per status).
_AUDIO_DESCRIPTION = "The audio, in the Content-Type of the requested format. " + " ".join(
    f"`{content_type}`: {description}" for content_type, description in AUDIO_CONTENT_TYPES.values())


# The headers of a synthesis request and its answer, for the API schema.
SYNTHESIS_HEADERS = [
    OpenApiParameter(
        "X-Request-ID", OpenApiTypes.UUID, OpenApiParameter.HEADER,
        description="Makes billing idempotent: a retry with the same id and the same request is billed "
                    "once (tried at most TTS_REQUEST_MAX_ATTEMPTS times); another request with it is a 409.",
    ),
    OpenApiParameter("X-Request-ID", OpenApiTypes.UUID, OpenApiParameter.HEADER, response=[200],
                     description="The request's id: the one sent, or one made for it (its usage row)."),
    OpenApiParameter("X-Sample-Rate", OpenApiTypes.INT, OpenApiParameter.HEADER, response=[200],
                     description="Of the audio, in Hz (22050 for eSpeak, 24000 for XTTS)."),
    OpenApiParameter("X-Worker-Id", OpenApiTypes.STR, OpenApiParameter.HEADER, response=[200],
                     description="The model worker that made it, for operators."),
]


class SynthesizeView(TenantApiView):
    """POST /v1/synthesize: speech for text or SSML, streamed as it is produced in the format asked for.

    Served by `synthesize` below: this class is its DRF half (key authentication, scope, rate limits,
    parsing, validation, the error shape), run in a worker thread in one go."""

    required_scope = "synthesize"
    content_negotiation_class = AudioNegotiation

    @extend_schema(
        operation_id="synthesize",
        summary="Speech for text or SSML",
        description=(
            "Streams the audio as it is produced (`streaming: true`, chunked transfer; the WAV header's sizes "
            "are 0xFFFFFFFF) or answers the whole clip with its Content-Length (`streaming: false`). Send `text` "
            "or `ssml` (a `<speak>` document: break, prosody, say-as, sub, emphasis), not both, with something to "
            "say (else 400 `empty_text`). JSON or form bodies are accepted. One usage row is billed per request id."
        ),
        tags=["synthesis"],
        request=SynthesizeSerializer,
        parameters=SYNTHESIS_HEADERS,
        responses={
            **{(200, content_type): binary_response(_AUDIO_DESCRIPTION) for content_type, _ in AUDIO_CONTENT_TYPES.values()},
            **error_responses(
                "invalid_request", "malformed_request", "invalid_request_id", "empty_text", "invalid_ssml",
                "quota_exceeded", "voice_not_found", "voice_not_ready", "request_id_conflict", "request_in_progress",
                "too_many_attempts", "text_too_long", "audio_too_long", "request_too_large", "unsupported_media_type",
                "unsupported_language", "too_many_streams", "voice_unavailable", "engine_unavailable",
                "engine_loading", "no_worker_available", "queue_unavailable", "worker_timeout", "worker_lost",
                "worker_failed", "invalid_voice_settings",
            ),
        },
        examples=[
            OpenApiExample("text", request_only=True, value={
                "text": "Thanks for calling. How can I help you today?", "voice_id": "default", "language": "en",
                "streaming": True, "speed": 1.0, "format": "wav"}),
            OpenApiExample("ssml", request_only=True, value={
                "ssml": '<speak>Please hold.<break time="500ms"/><prosody rate="slow">Your call matters to '
                        "us.</prosody></speak>", "voice_id": "default", "format": "pcm"}),
        ],
    )
    def post(self, request):
        """The schema and the Allow header of a 405 only: POST is served by `synthesize` below, which runs this
        class's checks (admit) itself and streams the audio from the event loop."""
        raise ImproperlyConfigured("POST /v1/synthesize is served by synthesis.views.synthesize, not this method.")

    def admit(self, request) -> tuple[SynthesisSession | None, HttpResponse | None]:
        """DRF's checks and the session's own (database, quota, concurrency): a prepared session, or the error
        response. One thread hop for everything before the audio."""
        drf_request = self.initialize_request(request)
        self.request, self.headers = drf_request, self.default_response_headers
        session = None
        try:
            self.initial(drf_request)
            session = SynthesisSession(
                api_key=drf_request.auth,
                request_id=parse_request_id(drf_request.headers.get("X-Request-ID"), "X-Request-ID"),
            )
            session.prepare(self.synthesize_request(drf_request.data))
            return session, None
        except Exception as exc:
            exc = as_api_error(exc)  # Redis or the database down: 503, and a usage row where it can be written
            if session is not None and isinstance(exc, exceptions.APIException):
                session.refuse(error_code(exc))
            response = self.finalize_response(drf_request, self.handle_exception(exc))
            response.render()
            return None, response

    def synthesize_request(self, data) -> dict:
        """The validated SynthesizeSerializer fields of the request."""
        serializer = SynthesizeSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.validated_data


class StreamTokenView(TenantApiView):
    """POST /v1/stream/token: a short-lived, single-use token that opens one WebSocket connection to /v1/stream
    as this key, for browsers (they cannot set an Authorization header on a WebSocket; a long-lived key never
    goes in a URL). Counts against the tenant's rate limits like any key request."""

    required_scope = "synthesize"

    @extend_schema(
        operation_id="stream_token",
        summary="A single-use token for the WebSocket API from a browser",
        description="Open `/v1/stream?token=...` with it within `expires_in` seconds (TTS_STREAM_TOKEN_SECONDS); "
                    "it opens one connection, as this key, and is gone once used.",
        tags=["synthesis"],
        request=None,
        responses={200: StreamTokenSerializer, **error_responses()},
        examples=[OpenApiExample("token", response_only=True, value={
            "token": "wst_4kVb...", "expires_in": 60, "url": "/v1/stream?token=wst_4kVb..."})],
    )
    def post(self, request):
        issued = stream_token_issue(api_key=request.auth)
        body = {"token": issued.token, "expires_in": issued.expires_in, "url": f"/v1/stream?token={issued.token}"}
        return Response(body, headers={"Cache-Control": "no-store"})  # a credential: no cache may keep it


class OpenAISpeechView(SynthesizeView):
    """POST /v1/audio/speech: OpenAI's request shape (synthesis.openai_speech), served as POST /v1/synthesize."""

    @extend_schema(
        operation_id="openai_speech",
        summary="OpenAI-compatible speech (OpenAI's SDKs work with base_url pointed here)",
        description=OPENAI_SPEECH_DESCRIPTION,
        tags=["synthesis"],
        request=OpenAISpeechSerializer,
        parameters=SYNTHESIS_HEADERS,
        responses={
            **{(200, FORMATS[name].content_type): binary_response(f"response_format={name}, 24 kHz.")
               for name in OPENAI_FORMATS},
            **error_responses(
                "invalid_request", "malformed_request", "invalid_request_id", "empty_text", "quota_exceeded",
                "voice_not_found", "voice_not_ready", "request_id_conflict", "request_in_progress",
                "too_many_attempts", "text_too_long", "audio_too_long", "request_too_large",
                "unsupported_media_type", "too_many_streams", "voice_unavailable", "engine_unavailable",
                "engine_loading", "no_worker_available", "queue_unavailable", "worker_timeout", "worker_lost",
                "worker_failed",
            ),
        },
        examples=[OpenApiExample("speech", request_only=True, value={
            "model": "tts-1", "voice": "alloy", "input": "Thank you for calling.", "response_format": "mp3"})],
    )
    def post(self, request):
        """The schema only: served by `openai_speech` below."""
        raise ImproperlyConfigured("POST /v1/audio/speech is served by synthesis.views.openai_speech.")

    def synthesize_request(self, data) -> dict:
        serializer = OpenAISpeechSerializer(data=data)
        serializer.is_valid(raise_exception=True)
        return serializer.synthesize_request()


def _error_response(exc: exceptions.APIException) -> JsonResponse:
    """The one error shape, answered from the event loop (no renderer needed for an ApiError)."""
    return JsonResponse(exception_body(exc), status=exc.status_code, headers=getattr(exc, "headers", None))


async def _file_chunks(body, size: int = 64 * 1024):
    """A collected clip (synthesis.services.SynthesisSession.collect), read out and closed."""
    try:
        while chunk := body.read(size):
            yield chunk
    finally:
        body.close()


async def _serve_synthesis(view_class: type[SynthesizeView], request):
    """A synthesis request. Async so that the request crosses into a thread once (view_class.admit, for the
    checks that need the database) and the job is dispatched, and its first audio awaited, on the event loop."""
    if request.method != "POST":
        return await sync_to_async(view_class.as_view())(request)  # DRF's 405 with its Allow header
    session, refused = await sync_to_async(view_class().admit)(request)
    if refused is not None:
        return refused
    return await serve_prepared_session(request, session)


async def serve_prepared_session(request, session: SynthesisSession, headers: dict | None = None):
    """The response for a session that prepare() admitted: its first audio awaited (a failure before any is still
    a proper error status), then the audio streamed, or the whole clip for streaming=false, billed once whatever
    happens. Also serves the portal's playground and voice samples (tenants/portal/views/audio.py)."""
    try:
        first = await session.start()  # a failure before any audio is still a proper error status
        if not session.streaming:
            body = await session.collect(first)
    except ApiError as exc:
        return _error_response(exc)  # start() and collect() have written the usage row
    content_type = session.content_type
    headers = {
        "X-Request-ID": str(session.request_id),
        "X-Sample-Rate": str(session.sample_rate),
        "X-Worker-Id": session.stream.worker_id,  # which model worker served it, for operators
        "Cache-Control": "no-store",
        **(headers or {}),
    }
    if not session.streaming:
        size = body.seek(0, 2)
        body.seek(0)
        return StreamingHttpResponse(_file_chunks(body), content_type=content_type,
                                     headers={**headers, "Content-Length": str(size)})
    # However the exchange ends, an unfinished stream is cancelled and billed (see RequestCleanupMiddleware).
    session.attach_delivery(request.scope.get("callwaiting.delivery"))
    cleanups = request.scope.get("callwaiting.cleanups")
    if cleanups is not None:
        cleanups.append(session.abandon)
    return StreamingHttpResponse(session.stream_body(first), content_type=content_type, headers=headers)


async def synthesize(request):
    """POST /v1/synthesize."""
    return await _serve_synthesis(SynthesizeView, request)


async def openai_speech(request):
    """POST /v1/audio/speech (OpenAI-compatible)."""
    return await _serve_synthesis(OpenAISpeechView, request)


# The view classes these functions serve, as Django's as_view() records them: what the URL walk in
# tests/tenants/test_api.py reads to see that they are tenant-scoped (SynthesizeView's checks).
synthesize.view_class = SynthesizeView
openai_speech.view_class = OpenAISpeechView
# ...and as DRF's as_view() records them for schema generation (drf-spectacular documents their post()).
synthesize.cls, synthesize.initkwargs = SynthesizeView, {}
openai_speech.cls, openai_speech.initkwargs = OpenAISpeechView, {}


class _LiveTwilioStreamView(TenantApiView):
    """A call up now on the Twilio bridge (/v1/twilio), named by its streamSid or its CallSid: only the tenant
    whose key opened the stream may reach it; anyone else's, or one that ended, is 404."""

    required_scope = "synthesize"

    def live_stream(self, sid: str) -> str:
        stream_sid = twilio.live_stream_of_tenant(sid=sid, tenant_id=self.tenant.pk)
        if stream_sid is None:
            raise ApiError("stream_not_found", f"No live Twilio stream or call {sid} for this tenant.", status.HTTP_404_NOT_FOUND)
        return stream_sid


class TwilioSpeakView(_LiveTwilioStreamView):
    """POST /v1/twilio/calls/<sid>/speak: queue an utterance on the call (spoken after those before it)."""

    @extend_schema(
        operation_id="twilio_speak", summary="Speak into a live Twilio call (/v1/twilio)", tags=["twilio"],
        description="Queues an utterance on the call named by its streamSid or CallSid; it is spoken after those "
                    "before it, as 8 kHz mu-law, and a `mark` named after its request id follows its audio. "
                    "Answered once queued: a refusal later (quota, voice) is logged and billed, not answered.",
        request=TwilioSpeakSerializer, parameters=SYNTHESIS_HEADERS[:1],
        responses={202: TwilioCallActionSerializer, **error_responses("invalid_request", "malformed_request",
                                                                      "invalid_request_id", "stream_not_found")},
    )
    def post(self, request, sid):
        stream_sid = self.live_stream(sid)
        named = parse_request_id(request.headers.get("X-Request-ID"), "X-Request-ID")
        serializer = TwilioSpeakSerializer(data=request.data)
        serializer.is_valid(raise_exception=True)
        request_id = named or uuid.uuid4()
        twilio.live_stream_speak(stream_sid=stream_sid, tenant_id=self.tenant.pk, data=dict(serializer.validated_data),
                                 request_id=request_id, named_by_client=named is not None)
        return Response({"stream_sid": stream_sid, "request_id": str(request_id), "status": "queued"},
                        status=status.HTTP_202_ACCEPTED)


class TwilioClearView(_LiveTwilioStreamView):
    """POST /v1/twilio/calls/<sid>/clear: barge-in. The utterance being spoken stops at once (its job cancelled),
    queued ones are dropped, and Twilio is told to drop the audio it holds."""

    @extend_schema(
        operation_id="twilio_clear", summary="Barge-in on a live Twilio call", tags=["twilio"], request=None,
        responses={202: TwilioCallActionSerializer, **error_responses("stream_not_found")},
    )
    def post(self, request, sid):
        stream_sid = self.live_stream(sid)
        twilio.live_stream_clear(stream_sid=stream_sid, tenant_id=self.tenant.pk)
        return Response({"stream_sid": stream_sid, "status": "cleared"}, status=status.HTTP_202_ACCEPTED)


# What /v1/health shows of each live worker's heartbeat.
_WORKER_FIELDS = (
    "worker_id", "host", "pid", "loading", "capacity", "load", "waiting_for_client", "engines_paused", "accepting", "jobs_started",
    "batches", "heartbeat_at",
)


class HealthView(APIView):
    """GET /v1/health: no key needed; 200 while something can be served (ok, loading or degraded), 503 when
    nothing can (unhealthy, or loading with no engine up yet), with Retry-After.

    Engines are `available`, `loading` (a worker is still loading it: it will be served shortly) or
    `unavailable` (with the reason). Redis (heartbeats, job queue, rate limits) and the database are reported
    on their own, so an outage says what is down."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

    @extend_schema(
        operation_id="health", summary="Service health", tags=["operations"],
        description="No key needed (load balancers and probes). 200 while something can be served (ok, loading, "
                    "degraded), 503 with Retry-After when nothing can.",
        responses={200: HealthSerializer, 503: OpenApiResponse(HealthSerializer, description="Nothing can be served "
                   "(status unhealthy, or loading with no engine up yet); Retry-After says when to look again.")},
        examples=[OpenApiExample("ok", response_only=True, value={
            "status": "ok", "version": "0.1.0", "database": {"ok": True, "vendor": "postgresql"},
            "redis": {"ok": True},
            "engines": {"espeak": {"available": True, "state": "available", "workers": 1, "capacity": 8,
                                   "sample_rate": 22050, "languages": ["en", "de"], "supports_cloning": False,
                                   "supports_streaming": True}},
            "workers": [{"worker_id": "gpu-0-1234", "host": "gpu-0", "pid": 1234, "loading": False, "capacity": 8,
                         "load": 2, "waiting_for_client": 0, "engines_paused": 0, "accepting": True,
                         "jobs_started": 310, "batches": {}, "heartbeat_at": 1790000000.5, "engines": ["espeak"]}],
            "embedded_worker": False})],
    )
    def get(self, request):
        body = service_health()
        serving = body.pop("serving")
        headers = None if serving else {"Retry-After": str(SERVICE_RETRY_AFTER)}
        return Response(body, status=200 if serving else 503, headers=headers)


class MetricsView(APIView):
    """GET /v1/metrics: Prometheus text format, the counters of every tenant together: for operators only
    (IsOperator), never for a tenant's key; a tenant's own numbers are at /v1/tenant/stats."""

    authentication_classes = [OperatorAuthentication]
    permission_classes = [IsOperator]
    throttle_classes: list = []

    @extend_schema(
        operation_id="metrics", summary="Prometheus metrics (operators)", tags=["operations"],
        responses={
            (200, "text/plain"): OpenApiResponse(
                OpenApiTypes.STR, description="Prometheus text exposition format 0.0.4: requests, time to first "
                "audio, streams, worker load... of every tenant together.",
                examples=[OpenApiExample("metrics", response_only=True, value=(
                    "# HELP tts_requests_total Synthesis requests by engine and outcome.\n"
                    "# TYPE tts_requests_total counter\n"
                    'tts_requests_total{engine="espeak",status="success"} 42.0\n'))]),
            **error_responses("authentication_required", "operator_only", key=False),
        },
    )
    def get(self, request):
        return HttpResponse(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
