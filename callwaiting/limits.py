"""Limits on what a client may send: request bodies per route, header sections, WebSocket messages. One place,
used by the server (callwaiting/server.py, before anything is read), the ASGI middleware and Django's handlers."""
from django.conf import settings

from callwaiting.errors import error_body

# Room for an upload form's other fields (voice_id, name, description, language) and multipart framing.
UPLOAD_FORM_SLACK = 64 * 1024


def body_limit(path: str) -> tuple[int, str]:
    """The most bytes a request body on `path` may have, and the error code of a body over it. The cloning
    upload takes TTS_MAX_UPLOAD_BYTES of audio; the rest of the API takes JSON or forms of at most Django's
    DATA_UPLOAD_MAX_MEMORY_SIZE; the portal and admin take the larger of the two (their forms may carry files)."""
    upload = settings.TTS_MAX_UPLOAD_BYTES + UPLOAD_FORM_SLACK
    if path == "/v1/voices/upload":
        return upload, "upload_too_large"
    if path.startswith("/v1/"):
        return settings.DATA_UPLOAD_MAX_MEMORY_SIZE, "request_too_large"
    return max(upload, settings.DATA_UPLOAD_MAX_MEMORY_SIZE), "request_too_large"


def too_large_body(path: str) -> dict:
    """The 413 answer's body for a request body over `path`'s limit."""
    limit, code = body_limit(path)
    what = "Uploads" if code == "upload_too_large" else f"Request bodies on {path}"
    return error_body(code, f"{what} are limited to {limit} bytes.")
