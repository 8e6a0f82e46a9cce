from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularRedocView, SpectacularSwaggerView

from callwaiting.openapi import SchemaView
from synthesis.admin import workers_admin_view
from synthesis.twilio import SID_PATTERN
from synthesis.views import (
    HealthView, MetricsView, StreamTokenView, TwilioClearView, TwilioSpeakView, openai_speech, synthesize,
)
from tenants.views import TenantStatsView
from voices.views import VoiceDetailView, VoiceListView, VoiceUploadView

urlpatterns = [
    path("v1/synthesize", synthesize, name="synthesize"),
    path("v1/audio/speech", openai_speech, name="openai-speech"),
    path("v1/stream/token", StreamTokenView.as_view(), name="stream-token"),
    path("v1/voices", VoiceListView.as_view(), name="voices"),
    path("v1/voices/upload", VoiceUploadView.as_view(), name="voice-upload"),
    path("v1/voices/<slug:voice_id>", VoiceDetailView.as_view(), name="voice-detail"),
    re_path(rf"^v1/twilio/calls/(?P<sid>{SID_PATTERN})/speak$", TwilioSpeakView.as_view(), name="twilio-speak"),
    re_path(rf"^v1/twilio/calls/(?P<sid>{SID_PATTERN})/clear$", TwilioClearView.as_view(), name="twilio-clear"),
    path("v1/health", HealthView.as_view(), name="health"),
    path("v1/metrics", MetricsView.as_view(), name="metrics"),
    path("v1/tenant/stats", TenantStatsView.as_view(), name="tenant-stats"),
    # The OpenAPI schema and the interactive docs: public, their assets served from /static/ (callwaiting/asgi.py).
    path("v1/schema", SchemaView.as_view(), name="schema"),
    path("docs", SpectacularSwaggerView.as_view(url_name="schema"), name="docs"),
    path("docs/redoc", SpectacularRedocView.as_view(url_name="schema"), name="redoc"),
    # Before admin.site.urls: an operators' page of the admin that is not a model (staff login required).
    path("admin/workers/", workers_admin_view, name="admin-workers"),
    path("admin/", admin.site.urls),
    path("portal/accounts/", include("allauth.urls")),
    path("portal/", include("tenants.portal.urls")),
]

handler400 = "callwaiting.errors.bad_request_handler"
handler403 = "callwaiting.errors.permission_denied_handler"
handler404 = "callwaiting.errors.not_found_handler"
handler500 = "callwaiting.errors.server_error_handler"
