
from asgiref.sync import sync_to_async
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from rest_framework import exceptions
from rest_framework.negotiation import DefaultContentNegotiation
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from callwaiting.errors import SERVICE_RETRY_AFTER, ApiError, as_api_error, error_code, exception_body
from synthesis import metrics
from synthesis.openai_speech import OpenAISpeechSerializer
from synthesis.selectors import service_health
from synthesis.serializers import SynthesizeSerializer
from synthesis.services import SynthesisSession, parse_request_id
from tenants.api import TenantApiView
from tenants.authentication import OperatorAuthentication
from tenants.models import UsageRecord
from tenants.permissions import IsOperator
from tenants.services import stream_token_issue


class AudioNegotiation(DefaultContentNegotiation):
    """A synthesis answers audio whatever Accept says (OpenAI's SDK sends application/octet-stream, a browser
    audio/*), so no 406: the renderer is only for errors, which are JSON."""

    def select_renderer(self, request, renderers, format_suffix=None):
        return renderers[0], renderers[0].media_type


class SynthesizeView(TenantApiView):
    """POST /v1/synthesize: speech for text or SSML, streamed as it is produced in the format asked for.

    Served by `synthesize` below: this class is its DRF half (key authentication, scope, rate limits,
    parsing, validation, the error shape), run in a worker thread in one go."""

    required_scope = "synthesize"
    content_negotiation_class = AudioNegotiation

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

    def post(self, request):
        issued = stream_token_issue(api_key=request.auth)
        body = {"token": issued.token, "expires_in": issued.expires_in, "url": f"/v1/stream?token={issued.token}"}
        return Response(body, headers={"Cache-Control": "no-store"})  # a credential: no cache may keep it


class OpenAISpeechView(SynthesizeView):
    """POST /v1/audio/speech: OpenAI's request shape (synthesis.openai_speech), served as POST /v1/synthesize."""

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


class HealthView(APIView):
    """GET /v1/health: no key needed; 200 while something can be served (ok, loading or degraded), 503 when
    nothing can (unhealthy, or loading with no engine up yet), with Retry-After.

    Engines are `available`, `loading` (a worker is still loading it: it will be served shortly) or
    `unavailable` (with the reason). Redis (heartbeats, job queue, rate limits) and the database are reported
    on their own, so an outage says what is down."""

    authentication_classes: list = []
    permission_classes = [AllowAny]
    throttle_classes: list = []

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

    def get(self, request):
        return HttpResponse(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
