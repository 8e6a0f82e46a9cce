from rest_framework import exceptions, permissions, status

from callwaiting.errors import ApiError
from tenants.models import ApiKey


class _AnyScope:
    def __repr__(self) -> str:
        return "ANY_SCOPE"


# required_scope of a tenant view that any valid key of the tenant may call (its own usage stats, say).
ANY_SCOPE = _AnyScope()


def require_scope(api_key: ApiKey, scope: str) -> None:
    """403 missing_scope unless the key carries `scope`; shared by DRF views and the WebSocket API."""
    if not api_key.has_scope(scope):
        raise ApiError("missing_scope", f"This API key lacks the '{scope}' scope.", status.HTTP_403_FORBIDDEN)


class HasScope(permissions.BasePermission):
    """The view names `required_scope` (or one per HTTP method; HEAD is GET's), or ANY_SCOPE; a key without
    the scope gets 403 missing_scope. TenantApiView makes every subclass declare it."""

    def has_permission(self, request, view):
        api_key = request.auth
        if api_key is None:
            raise exceptions.NotAuthenticated("An API key is required: Authorization: Bearer <api_key>.")
        scope = getattr(view, "required_scope", None)
        if isinstance(scope, dict):  # per HTTP method
            scope = scope.get("GET" if request.method == "HEAD" else request.method, ANY_SCOPE)  # others: 405/OPTIONS
        if scope is not ANY_SCOPE:
            require_scope(api_key, scope)
        return True


class IsOperator(permissions.BasePermission):
    """Service-wide data (all tenants at once) is for the people who run the service, never for a tenant;
    with OperatorAuthentication: the METRICS_TOKEN bearer token or a staff session. A tenant's API key,
    whatever its scopes, gets 403 operator_only pointing at its own numbers; no credential at all gets 401."""

    def has_permission(self, request, view):
        from tenants.authentication import OPERATOR_TOKEN, STAFF_SESSION

        if request.auth in (OPERATOR_TOKEN, STAFF_SESSION):
            return True
        if request.META.get("HTTP_AUTHORIZATION") or request.user is not None:
            raise ApiError(
                "operator_only",
                f"{request.path} shows the whole service and is for its operators (Authorization: Bearer "
                "<METRICS_TOKEN>, or a staff session); a tenant's own usage is at /v1/tenant/stats.",
                status.HTTP_403_FORBIDDEN,
            )
        raise ApiError(
            "authentication_required",
            f"{request.path} needs an operator credential: Authorization: Bearer <METRICS_TOKEN>, or a staff session.",
            status.HTTP_401_UNAUTHORIZED,
        )
