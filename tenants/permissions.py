from rest_framework import exceptions, permissions, status

from callwaiting.errors import ApiError
from tenants.models import ApiKey


def require_scope(api_key: ApiKey, scope: str) -> None:
    """403 missing_scope unless the key carries `scope`; shared by DRF views and the WebSocket API."""
    if not api_key.has_scope(scope):
        raise ApiError("missing_scope", f"This API key lacks the '{scope}' scope.", status.HTTP_403_FORBIDDEN)


class HasScope(permissions.BasePermission):
    """The view names `required_scope` (or one per HTTP method); a key without it gets 403 missing_scope."""

    def has_permission(self, request, view):
        api_key = request.auth
        if api_key is None:
            raise exceptions.NotAuthenticated("An API key is required: Authorization: Bearer <api_key>.")
        scope = getattr(view, "required_scope", None)
        if isinstance(scope, dict):  # per HTTP method
            scope = scope.get(request.method)
        if scope:
            require_scope(api_key, scope)
        return True
