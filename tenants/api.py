"""Base for every tenant-facing API view: key authentication, scope, per-tenant rate limit, and `self.tenant`.

Every tenant-owned query in a view starts from `self.tenant`, the tenant the key belongs to; there is no
other way to name a tenant in the public API, so one tenant can never reach another's data.

Scoping is checked when a subclass is created, not when a request comes: a subclass must declare
`required_scope` (a scope, a dict of one per HTTP method it serves, or ANY_SCOPE for "any key of the tenant"),
and may not drop the key authentication or the scope check. A view that forgets fails at import, so it never
serves a request. tests/tenants/test_api.py walks the URL resolver: every /v1/ view is one of these or on an
explicit list of views that are not tenant-scoped (health, operator metrics).
"""
from django.core.exceptions import ImproperlyConfigured
from rest_framework.views import APIView

from tenants.authentication import ApiKeyAuthentication
from tenants.models import Scope
from tenants.permissions import ANY_SCOPE, HasScope

__all__ = ["ANY_SCOPE", "TenantApiView"]

_UNDECLARED = object()
_HANDLERS = ("get", "post", "put", "patch", "delete")


def _check_scoping(cls) -> None:
    name = f"{cls.__module__}.{cls.__qualname__}"
    scope = cls.required_scope
    known = set(Scope.values)
    if scope is _UNDECLARED:
        raise ImproperlyConfigured(
            f"{name} must declare required_scope: one of {sorted(known)}, a dict of one per HTTP method, or "
            "ANY_SCOPE (tenants.api) when any key of the tenant may call it."
        )
    if isinstance(scope, dict):
        served = {handler.upper() for handler in _HANDLERS if callable(getattr(cls, handler, None))}
        if missing := sorted(served - set(scope)):
            raise ImproperlyConfigured(f"{name}.required_scope names no scope for {', '.join(missing)}.")
        scopes = set(scope.values())
    else:
        scopes = {scope}
    if unknown := [value for value in scopes if value is not ANY_SCOPE and value not in known]:
        raise ImproperlyConfigured(f"{name}.required_scope: {unknown!r} is not a scope ({sorted(known)}, or ANY_SCOPE).")
    if not any(issubclass(permission, HasScope) for permission in cls.permission_classes):
        raise ImproperlyConfigured(f"{name}.permission_classes must keep HasScope: tenant views check the key's scope.")
    if not cls.authentication_classes or not all(
        issubclass(authenticator, ApiKeyAuthentication) for authenticator in cls.authentication_classes
    ):
        raise ImproperlyConfigured(f"{name}.authentication_classes must be API-key authentication: the tenant comes from the key.")


class TenantApiView(APIView):
    authentication_classes = [ApiKeyAuthentication]
    permission_classes = [HasScope]
    required_scope = _UNDECLARED  # each subclass declares it: see _check_scoping

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        _check_scoping(cls)

    @property
    def tenant(self):
        return self.request.auth.tenant
