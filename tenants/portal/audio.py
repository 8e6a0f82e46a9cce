"""Audio the portal plays in the browser (the playground, voice samples) without ever exposing an API key.

An <audio> element can only GET its src, with the session cookie, so a URL must not be enough to make a billed
request on someone's behalf. The playground form is a POST with its CSRF token; it stores what was asked under a
fresh request id (in the cache, for PLAYGROUND_SECONDS: a long text or SSML does not fit in a URL) and the page
gets /portal/playground/audio/<request id>/, which only the same user, still a member of the same tenant, can
open. Voice samples are GET URLs signed for the user, the tenant and the voice (SAMPLE_URL_SECONDS).

Either is served by synthesis.views.serve_prepared_session: the same SynthesisSession path as POST
/v1/synthesize (rate limits, quota, concurrency, streaming, one usage row billed to the tenant; the row names no API key)."""
import uuid

from django.core import signing
from django.core.cache import cache
from rest_framework import exceptions

from callwaiting.errors import as_api_error, error_code
from synthesis.serializers import SynthesizeSerializer
from synthesis.services import SynthesisSession
from tenants.throttling import tenant_rate_wait_for

PLAYGROUND_SECONDS = 600  # a playground result can be played and downloaded for this long
SAMPLE_URL_SECONDS = 3600  # a voices page's sample links work this long (its players fetch nothing before "play")
_SAMPLE_SALT = "portal.voice-sample"


def _playground_key(request_id: uuid.UUID) -> str:
    return f"portal:playground:{request_id}"


def playground_request_store(*, user, tenant, data: dict, request_id: uuid.UUID | None = None) -> uuid.UUID:
    """Keep a validated playground request for its audio URL; its id is also the request id it is billed under,
    so the browser fetching it again (a reload, a seek) is a retry of the same request, billed once."""
    request_id = request_id or uuid.uuid4()
    cache.set(_playground_key(request_id), {"user": user.pk, "tenant": tenant.pk, "data": data}, PLAYGROUND_SECONDS)
    return request_id


def playground_request_get(*, user, tenant, request_id: uuid.UUID) -> dict | None:
    """What the user asked for under `request_id` while working on `tenant`; None when it is not theirs (another
    user's, another tenant's) or has expired."""
    stored = cache.get(_playground_key(request_id))
    if not stored or stored["user"] != user.pk or stored["tenant"] != tenant.pk:
        return None
    return stored["data"]


def voice_sample_token(*, user, tenant, voice) -> str:
    return signing.dumps([user.pk, tenant.pk, voice.pk], salt=_SAMPLE_SALT)


def voice_sample_token_valid(token: str, *, user, tenant, voice) -> bool:
    try:
        signed = signing.loads(token, salt=_SAMPLE_SALT, max_age=SAMPLE_URL_SECONDS)
    except signing.BadSignature:  # SignatureExpired included
        return False
    return signed == [user.pk, tenant.pk, voice.pk]


def voice_sample_text(voice) -> str:
    return f"Hello, this is {voice.name}. Thank you for calling; how can I help you today?"


def portal_session_admit(*, tenant, data: dict, request_id: uuid.UUID | None = None) -> SynthesisSession:
    """A prepared SynthesisSession for the tenant, validated as POST /v1/synthesize validates its body; raises the
    ApiError (or DRF ValidationError) the API would answer, after writing the refusal's usage row as it would."""
    try:  # the tenant's request rate limits count the portal's requests too
        wait = tenant_rate_wait_for(tenant)
    except Exception as exc:
        raise as_api_error(exc)  # Redis down: 503 service_unavailable, as the API answers, not a 500
    if wait:
        raise exceptions.Throttled(wait)
    serializer = SynthesizeSerializer(data=data)
    serializer.is_valid(raise_exception=True)
    session = SynthesisSession(tenant=tenant, request_id=request_id)
    try:
        session.prepare(serializer.validated_data)
    except Exception as exc:
        exc = as_api_error(exc)
        if isinstance(exc, exceptions.APIException):
            session.refuse(error_code(exc))
        raise exc
    return session

