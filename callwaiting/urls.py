from django.contrib import admin
from django.urls import path, re_path

from synthesis.twilio import SID_PATTERN
from synthesis.views import HealthView, MetricsView, TwilioClearView, TwilioSpeakView, synthesize
from tenants.views import TenantStatsView
from voices.views import VoiceDetailView, VoiceListView, VoiceUploadView

urlpatterns = [
    path("v1/synthesize", synthesize, name="synthesize"),
    path("v1/voices", VoiceListView.as_view(), name="voices"),
    path("v1/voices/upload", VoiceUploadView.as_view(), name="voice-upload"),
    path("v1/voices/<slug:voice_id>", VoiceDetailView.as_view(), name="voice-detail"),
    re_path(rf"^v1/twilio/calls/(?P<sid>{SID_PATTERN})/speak$", TwilioSpeakView.as_view(), name="twilio-speak"),
    re_path(rf"^v1/twilio/calls/(?P<sid>{SID_PATTERN})/clear$", TwilioClearView.as_view(), name="twilio-clear"),
    path("v1/health", HealthView.as_view(), name="health"),
    path("v1/metrics", MetricsView.as_view(), name="metrics"),
    path("v1/tenant/stats", TenantStatsView.as_view(), name="tenant-stats"),
    path("admin/", admin.site.urls),
]

handler400 = "callwaiting.errors.bad_request_handler"
handler404 = "callwaiting.errors.not_found_handler"
handler500 = "callwaiting.errors.server_error_handler"
