"""`Authorization: Bearer sk_...` for DRF views, and the operator credential for service-wide endpoints."""
from dataclasses import dataclass

from rest_framework import authentication, exceptions

from tenants import selectors, services
from tenants.keys import operator_token_matches
from tenants.models import ApiKey, Tenant


@dataclass(frozen=True)
class ApiPrincipal:
    """request.user for key-authenticated requests: the tenant acting through one of its keys."""

    api_key: ApiKey
    is_authenticated: bool = True

    @property
    def tenant(self) -> Tenant:
        return self.api_key.tenant


class KeyAuthenticationFailed(exceptions.AuthenticationFailed):
    def __init__(self, code: str, message: str):
        super().__init__(detail=message)
        self.custom_code = code


def api_key_from_authorization(header: str | None) -> ApiKey | None:
    """The key an Authorization header presents, read only: None when no key was presented; raises
    KeyAuthenticationFailed for a bad one. The server checks a request's key with it before reading its body."""
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise KeyAuthenticationFailed("malformed_authorization", "Authorization header must be 'Bearer <api_key>'.")
    try:
        return selectors.api_key_authenticate(plaintext=token.strip())
    except selectors.KeyRejected as rejected:
        raise KeyAuthenticationFailed(rejected.code, rejected.message) from None


def authenticate_authorization_header(header: str | None) -> ApiKey | None:
    """As api_key_from_authorization, and the key is marked used."""
    api_key = api_key_from_authorization(header)
    if api_key is not None:
        services.api_key_mark_used(api_key=api_key)
    return api_key


def api_key_from_stream_token(token: str) -> ApiKey:
    """The key a WebSocket token (POST /v1/stream/token) was issued for, redeeming the token (once; it is gone
    afterwards) and marking the key used; raises KeyAuthenticationFailed for a bad token or a key that is no
    longer usable."""
    try:
        api_key = services.stream_token_redeem(token=token)
    except selectors.KeyRejected as rejected:
        raise KeyAuthenticationFailed(rejected.code, rejected.message) from None
    services.api_key_mark_used(api_key=api_key)
    return api_key


def api_key_recheck(api_key: ApiKey) -> ApiKey:
    """`api_key` as it is now, if still usable (a long-lived connection checks it again before each piece of
    work); raises KeyAuthenticationFailed once it has been revoked, has expired, or its tenant is suspended."""
    try:
        return selectors.api_key_get_usable(api_key_id=api_key.pk)
    except selectors.KeyRejected as rejected:
        raise KeyAuthenticationFailed(rejected.code, rejected.message) from None


class ApiKeyAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        api_key = authenticate_authorization_header(request.META.get("HTTP_AUTHORIZATION"))
        if api_key is None:
            return None
        return ApiPrincipal(api_key=api_key), api_key

    def authenticate_header(self, request):
        return 'Bearer realm="api"'


OPERATOR_TOKEN, STAFF_SESSION = "metrics_token", "staff_session"  # request.auth of an operator


class OperatorAuthentication(authentication.BaseAuthentication):
    """An operator, for endpoints about the whole service (IsOperator): `Authorization: Bearer <METRICS_TOKEN>`
    (request.auth OPERATOR_TOKEN) or a Django staff session (request.auth STAFF_SESSION). Any other session
    user comes through with request.auth None, so that IsOperator can tell "not yours" (403) from "nobody"
    (401). Tenant API keys are never looked up here: they do not open these endpoints."""

    def authenticate(self, request):
        scheme, _, credential = request.META.get("HTTP_AUTHORIZATION", "").partition(" ")
        if scheme.lower() == "bearer" and operator_token_matches(credential.strip()):
            return None, OPERATOR_TOKEN
        user = getattr(request._request, "user", None)  # Django's session user (AuthenticationMiddleware)
        if user is None or not user.is_authenticated or not user.is_active:
            return None
        return user, STAFF_SESSION if user.is_staff else None
