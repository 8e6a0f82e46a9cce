import uuid

from asgiref.sync import async_to_sync
from django.conf import settings
from django.db import connection
from django.http import HttpResponse, StreamingHttpResponse
from rest_framework import exceptions
from rest_framework.permissions import AllowAny
from rest_framework.response import Response
from rest_framework.views import APIView

from callwaiting.errors import ApiError, error_code
from synthesis import metrics, workers
from synthesis.serializers import SynthesizeSerializer
from synthesis.services import SynthesisSession
from tenants.api import TenantApiView
from tenants.models import UsageRecord


def _request_id(request) -> uuid.UUID:
    """Clients may send X-Request-ID (a UUID) so that a retried request is billed once."""
    raw = request.headers.get("X-Request-ID")
    if not raw:
        return uuid.uuid4()
    try:
        return uuid.UUID(raw)
    except ValueError:
        raise ApiError("invalid_request_id", "X-Request-ID must be a UUID.") from None


class SynthesizeView(TenantApiView):
    """POST /v1/synthesize: speech for text or SSML, streamed as it is produced (WAV or raw PCM)."""

    required_scope = "synthesize"

    def post(self, request):
        session = SynthesisSession(api_key=request.auth, request_id=_request_id(request))
        try:
            serializer = SynthesizeSerializer(data=request.data)
            serializer.is_valid(raise_exception=True)
            session.prepare(serializer.validated_data)
            first = async_to_sync(session.start)()
            if not session.streaming:
                body = async_to_sync(session.collect)(first)
        except exceptions.APIException as exc:
            session.close(UsageRecord.Status.ERROR, error_code(exc))
            raise
        content_type = "audio/wav" if session.audio_format == "wav" else "audio/L16"
        headers = {
            "X-Request-ID": str(session.request_id),
            "X-Sample-Rate": str(session.sample_rate),
            "X-Worker-Id": session.stream.worker_id,  # which model worker served it, for operators
            "Cache-Control": "no-store",
        }
        if not session.streaming:
            return HttpResponse(body, content_type=content_type, headers=headers)
        # However the exchange ends, an unfinished stream is cancelled and billed (see RequestCleanupMiddleware).
        cleanups = getattr(request, "scope", {}).get("callwaiting.cleanups")
        if cleanups is not None:
            cleanups.append(session.abandon)
        return StreamingHttpResponse(session.stream_body(first), content_type=content_type, headers=headers)


# What /v1/health shows of each live worker's heartbeat.
_WORKER_FIELDS = (
    "worker_id", "host", "pid", "capacity", "load", "waiting_for_client", "engines_paused", "accepting", "jobs_started",
    "batches", "heartbeat_at",
)


class HealthView(APIView):
    """GET /v1/health: no key needed; 200 when serving (ok or degraded), 503 when it cannot serve at all."""

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
        engines = workers.engine_availability()
        live = workers.live_workers()
        any_engine = any(state["available"] for state in engines.values())
        if not database["ok"] or not any_engine:
            overall = "unhealthy"
        elif all(state["available"] for state in engines.values()):
            overall = "ok"
        else:
            overall = "degraded"
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
        return Response(body, status=503 if overall == "unhealthy" else 200)


class MetricsView(TenantApiView):
    """GET /v1/metrics: Prometheus text format; admin scope."""

    required_scope = "admin"

    def get(self, request):
        return HttpResponse(metrics.render(), content_type="text/plain; version=0.0.4; charset=utf-8")
