"""The one error shape: {"error": {"code": "...", "message": "..."}} with the right HTTP status."""
from django.core.exceptions import RequestDataTooBig, TooManyFieldsSent, TooManyFilesSent
from django.http import JsonResponse
from rest_framework import exceptions, status
from rest_framework.views import exception_handler


class ClientGone(Exception):
    """Raised out of a WebSocket's `send` (callwaiting.middleware) once its client has hung up or read nothing
    for TTS_CLIENT_STALL_TIMEOUT: whatever was sending stops, and the exchange is billed as disconnected."""


class ApiError(exceptions.APIException):
    """The one error type: a stable code, a message safe to show the client, and the HTTP status. Raised from
    services, the front end, engines and the job queue alike; the REST handler renders it in the one error
    shape, the WebSocket API sends that as a frame and closes with 4000 + status, and Celery tasks record its
    message on what they were doing. Subclasses only say where an error came from, for `except` clauses."""

    default_status = status.HTTP_400_BAD_REQUEST

    def __init__(self, code: str, message: str, status_code: int | None = None, headers=None):
        super().__init__(detail=message, code=code)
        self.code = code
        self.message = message
        self.status_code = status_code or self.default_status
        self.headers = headers or {}

    def as_dict(self) -> dict:
        return error_body(self.code, self.message)


def error_body(code: str, message: str) -> dict:
    return {"error": {"code": code, "message": message}}


def error_response(code: str, message: str, status_code: int) -> JsonResponse:
    """For plain Django views and handlers outside DRF."""
    return JsonResponse(error_body(code, message), status=status_code)


# DRF's own exceptions, mapped to stable codes a client can switch on.
_DRF_CODES = {
    exceptions.NotAuthenticated: "authentication_required",
    exceptions.AuthenticationFailed: "invalid_api_key",
    exceptions.PermissionDenied: "permission_denied",
    exceptions.NotFound: "not_found",
    exceptions.MethodNotAllowed: "method_not_allowed",
    exceptions.NotAcceptable: "not_acceptable",
    exceptions.UnsupportedMediaType: "unsupported_media_type",
    exceptions.ParseError: "malformed_request",
    exceptions.Throttled: "rate_limited",
    exceptions.ValidationError: "invalid_request",
}


def _flatten(detail, prefix="") -> list[str]:
    if isinstance(detail, dict):
        out = []
        for key, value in detail.items():
            field = "" if key == "non_field_errors" else f"{prefix}{key}"
            out.extend(_flatten(value, f"{field}: " if field else ""))
        return out
    if isinstance(detail, list):
        return [msg for item in detail for msg in _flatten(item, prefix)]
    return [f"{prefix}{detail}"]


def error_code(exc: exceptions.APIException) -> str:
    if isinstance(exc, ApiError):
        return exc.code
    if getattr(exc, "custom_code", None):
        return exc.custom_code
    return next((code for cls, code in _DRF_CODES.items() if isinstance(exc, cls)), "error")


def exception_body(exc: exceptions.APIException) -> dict:
    """The error shape for any API exception: the REST response body, and the WebSocket API's error frame."""
    if isinstance(exc, ApiError):
        return exc.as_dict()
    if isinstance(exc, exceptions.Throttled):
        message = exc.detail if isinstance(exc.detail, str) else "Rate limit exceeded."
    else:
        message = "; ".join(_flatten(exc.detail)) if not isinstance(exc.detail, str) else str(exc.detail)
    return error_body(error_code(exc), message)


# Seconds a client is told to wait when a backing service (Redis, the database) cannot be reached.
SERVICE_RETRY_AFTER = 2

_UNREACHABLE = {
    "redis": "Redis (rate limits, model-worker registry, job queue) cannot be reached",
    "database": "The database cannot be reached",
}


def service_unavailable(exc: BaseException, service: str = "redis") -> ApiError:
    """Redis (rate limits, stream slots, worker heartbeats, job queue) or the database cannot be reached: a 503
    the client may retry, never a 500."""
    return ApiError(
        "service_unavailable",
        f"{_UNREACHABLE[service]}; try again shortly. ({exc})",
        status.HTTP_503_SERVICE_UNAVAILABLE,
        headers={"Retry-After": str(SERVICE_RETRY_AFTER)},
    )


def is_database_error(exc: BaseException) -> bool:
    """The database is down, restarting, or gives no connection in time: Django's OperationalError and
    InterfaceError (what it makes of psycopg's, the pool's PoolTimeout included), or psycopg's own where they
    escape Django's wrapping."""
    from django.db import utils

    if isinstance(exc, (utils.OperationalError, utils.InterfaceError)):
        return True
    try:
        import psycopg
    except ImportError:
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def as_api_error(exc: BaseException) -> BaseException:
    """An outage of a backing service (Redis, the database) becomes its 503 ApiError; anything else is
    returned as it is."""
    from callwaiting.redis_client import is_redis_error

    if is_redis_error(exc):
        return service_unavailable(exc, "redis")
    if is_database_error(exc):
        return service_unavailable(exc, "database")
    return exc


def outage_response(request, exception):
    """Exception middleware of the API's handler (callwaiting.middleware.ApiHandler): an outage that escapes a
    view outside DRF (the async synthesize view, a usage row that cannot be written) is its 503, not a 500."""
    error = as_api_error(exception)
    if error is exception:
        return None
    return JsonResponse(error.as_dict(), status=error.status_code, headers=error.headers)


def api_exception_handler(exc, context):
    exc = as_api_error(exc)
    response = exception_handler(exc, context)
    if response is None:
        return None  # unexpected exceptions become Django's 500
    if isinstance(exc, ApiError):
        for name, value in exc.headers.items():
            response[name] = value
    if isinstance(exc, exceptions.NotAuthenticated):
        # DRF turns an unauthenticated 403 into 401 only when the authenticator names a challenge.
        response.status_code = status.HTTP_401_UNAUTHORIZED
    response.data = exception_body(exc)
    return response


def bad_request_handler(request, exception=None):
    """Django's own 400s (a body over DATA_UPLOAD_MAX_MEMORY_SIZE, too many fields, a suspicious request), which
    it would answer with an HTML page. A body too large is 413, as the server answers it before reading it."""
    if isinstance(exception, RequestDataTooBig):
        from callwaiting.limits import too_large_body

        return JsonResponse(too_large_body(request.path), status=413)
    if isinstance(exception, (TooManyFieldsSent, TooManyFilesSent)):
        return error_response("too_many_fields", str(exception), 400)
    return error_response("bad_request", "The request is malformed.", 400)


# Pages for people (the tenant-staff portal) get HTML error pages; everything else, the one JSON error shape.
PORTAL_PREFIX = "/portal/"


def _portal_page(request, template: str, status_code: int, context=None):
    if not request.path.startswith(PORTAL_PREFIX):
        return None
    from django.shortcuts import render

    try:
        return render(request, template, context or {}, status=status_code)
    except Exception:  # a page that cannot render (the database is down...) still answers, plainly
        from django.http import HttpResponse

        return HttpResponse(f"<!DOCTYPE html><title>Error {status_code}</title><h1>Error {status_code}</h1>",
                            status=status_code)


def permission_denied_handler(request, exception=None):
    message = str(exception) if exception and str(exception) else "You may not do this."
    return _portal_page(request, "portal/403.html", 403, {"message": message}) or error_response(
        "permission_denied", message, 403)


def not_found_handler(request, exception=None):
    return _portal_page(request, "portal/404.html", 404) or error_response(
        "not_found", f"No such endpoint: {request.path}", 404)


def server_error_handler(request):
    return _portal_page(request, "portal/500.html", 500) or error_response(
        "internal_error", "The server failed on this request; it has been logged.", 500)
