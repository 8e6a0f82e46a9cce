"""Tenant scoping by construction: a tenant view cannot be declared without its scope, and every /v1/ URL is
either a tenant view or on the explicit list below."""
import pytest
from django.core.exceptions import ImproperlyConfigured
from django.urls import URLPattern, URLResolver, get_resolver, path
from rest_framework.permissions import AllowAny
from rest_framework.views import APIView

from callwaiting.openapi import SchemaView
from synthesis.views import HealthView, MetricsView
from tenants.api import ANY_SCOPE, TenantApiView
from tests.factories import TenantFactory, bearer, issue_key

# /v1/ views that are not tenant-scoped, each with why. Adding one here is a decision a reviewer sees.
NOT_TENANT_SCOPED = {
    HealthView: "public: load balancers and probes call it without a key",
    MetricsView: "operators only (IsOperator: METRICS_TOKEN or a staff session), never a tenant",
    SchemaView: "public: the OpenAPI schema describes the API, no tenant's data",
}


def _routes(patterns, prefix=""):
    for pattern in patterns:
        route = prefix + str(pattern.pattern)
        if isinstance(pattern, URLResolver):
            yield from _routes(pattern.url_patterns, route)
        elif isinstance(pattern, URLPattern):
            yield route, pattern.callback


def unscoped_v1_views(resolver) -> list[str]:
    """The /v1/ routes whose view is neither a TenantApiView nor listed in NOT_TENANT_SCOPED. A function view
    counts through the class it serves (`view_class`, as as_view() sets it); one without is unscoped."""
    offenders = []
    for route, callback in _routes(resolver.url_patterns):
        if not route.startswith("v1/"):
            continue
        view_class = getattr(callback, "view_class", None)
        if view_class is None or not (issubclass(view_class, TenantApiView) or view_class in NOT_TENANT_SCOPED):
            offenders.append(route)
    return offenders


def test_every_v1_view_is_tenant_scoped_or_explicitly_not():
    resolver = get_resolver()
    routes = [route for route, _ in _routes(resolver.url_patterns) if route.startswith("v1/")]
    assert "v1/synthesize" in routes and "v1/tenant/stats" in routes  # the walk sees the whole URL conf
    assert unscoped_v1_views(resolver) == []


def test_the_walk_catches_an_unscoped_view_and_an_unmarked_function():
    class Open(APIView):
        permission_classes = [AllowAny]

    def bare(request):
        return None

    class Urls:
        urlpatterns = [path("v1/open", Open.as_view()), path("v1/bare", bare), path("v1/health", HealthView.as_view())]

    assert unscoped_v1_views(URLResolver(get_resolver().pattern, Urls)) == ["v1/open", "v1/bare"]


def test_a_tenant_view_without_a_declared_scope_cannot_be_defined():
    with pytest.raises(ImproperlyConfigured, match="must declare required_scope"):
        class Forgot(TenantApiView):
            def get(self, request):
                return None


@pytest.mark.parametrize(
    "body, message",
    [
        ({"required_scope": "everything"}, "is not a scope"),
        ({"required_scope": None}, "is not a scope"),
        ({"required_scope": {"GET": "voices"}, "delete": lambda self, request: None}, "no scope for DELETE"),
        ({"required_scope": "voices", "permission_classes": [AllowAny]}, "must keep HasScope"),
        ({"required_scope": "voices", "authentication_classes": []}, "API-key authentication"),
    ],
)
def test_a_tenant_view_cannot_loosen_its_scoping(body, message):
    with pytest.raises(ImproperlyConfigured, match=message):
        type("Loose", (TenantApiView,), {"__module__": __name__, "get": lambda self, request: None, **body})


def test_subclasses_of_a_declared_view_inherit_its_scope():
    class Declared(TenantApiView):
        required_scope = ANY_SCOPE

    class Child(Declared):
        pass

    assert Child.required_scope is ANY_SCOPE


@pytest.mark.django_db
def test_any_scope_lets_any_key_of_the_tenant_read_its_own_stats(api_client):
    tenant = TenantFactory()
    for scope in ("synthesize", "voices", "upload", "admin"):
        response = api_client.get("/v1/tenant/stats", **bearer(issue_key(tenant, scopes=[scope])))
        assert response.status_code == 200 and response.json()["tenant_id"] == tenant.slug


@pytest.mark.django_db
def test_head_needs_the_scope_of_get(api_client):
    key = issue_key(scopes=["synthesize"])
    response = api_client.head("/v1/voices/default", **bearer(key))
    assert response.status_code == 403
