
import uuid

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, JsonResponse, StreamingHttpResponse
from rest_framework import exceptions, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from callwaiting.errors import SERVICE_RETRY_AFTER, ApiError, as_api_error, error_code, exception_body
from synthesis import heartbeats, metrics, twilio
from synthesis.serializers import SynthesizeSerializer, TwilioSpeakSerializer
from synthesis.services import SynthesisSession, parse_request_id
from tenants.api import TenantApiView
from tenants.authentication import OperatorAuthentication
from tenants.models import UsageRecord
from tenants.permissions import IsOperator


class SynthesizeView(TenantApiView):
    """POST /v1/synthesize: speech for text or SSML, streamed as it is produced in the format asked for.

    Served by `synthesize` below: this class is its DRF half (key authentication, scope, rate limits,
    parsing, validation, the error shape), run in a worker thread in one go."""

    required_scope = "synthesize"

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
            serializer = SynthesizeSerializer(data=drf_request.data)
            serializer.is_valid(raise_exception=True)
            session.prepare(serializer.validated_data)
            return session, None
        except Exception as exc:
            exc = as_api_error(exc)  # Redis or the database down: 503, and a usage row where it can be written
            if session is not None and isinstance(exc, exceptions.APIException):
                session.refuse(error_code(exc))
            response = self.finalize_response(drf_request, self.handle_exception(exc))
            response.render()
            return None, response


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


async def synthesize(request):
    """POST /v1/synthesize. Async so that the request crosses into a thread once (SynthesizeView.admit, for the
    checks that need the database) and the job is dispatched, and its first audio awaited, on the event loop."""
    if request.method != "POST":
        return await sync_to_async(SynthesizeView.as_view())(request)  # DRF's 405 with its Allow header
    session, refused = await sync_to_async(SynthesizeView().admit)(request)
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


# The view class this function serves, as Django's as_view() records it: what the URL walk in
# tests/tenants/test_api.py reads to see that /v1/synthesize is tenant-scoped (SynthesizeView's checks).
synthesize.view_class = SynthesizeView


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

    def get(self, request):
        try:
            with connection.cursor() as cursor:
                cursor.execute("SELECT 1")
            database = {"ok": True, "vendor": connection.vendor}
        except Exception as exc:  # the health check must report, not crash
            database = {"ok": False, "error": str(exc)}
        redis = {"ok": True}
        try:
            engines = heartbeats.engine_availability()
            live = heartbeats.live_workers()
        except Exception as exc:  # the heartbeats live in Redis (production): say it is down
            redis = {"ok": False, "error": f"Redis cannot be reached: {exc}"}
            reason = "the model-worker registry (Redis) cannot be reached"
            engines = {name: {"available": False, "state": "unavailable", "reason": reason, "workers": 0}
                       for name in settings.TTS_ENGINES}
            live = []
        states = [state.get("state", "available" if state["available"] else "unavailable") for state in engines.values()]
        if not database["ok"] or not redis["ok"] or not states:
            overall = "unhealthy"
        elif all(state == "available" for state in states):
            overall = "ok"
        elif all(state in ("available", "loading") for state in states):
            overall = "loading"  # nothing is wrong: engines are still coming up
        elif "available" in states:
            overall = "degraded"
        else:
            overall = "unhealthy"
        serving = database["ok"] and redis["ok"] and "available" in states
        body = {
            "status": overall,
            "version": settings.VERSION,
            "database": database,
            "engines": engines,
            "workers": [
                {key: info.get(key) for key in _WORKER_FIELDS}
                | {"engines": sorted(name for name, state in info["engines"].items() if state["available"])}
                for info in live
            ],
            "embedded_worker": settings.TTS_EMBEDDED_WORKER,
        }
        if settings.REDIS_URL:
            body["redis"] = redis
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
