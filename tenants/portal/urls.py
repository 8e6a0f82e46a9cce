"""/portal/...: the tenant-staff portal; allauth's account pages (login, password, two-factor) under
/portal/accounts/."""
from django.urls import include, path

from tenants.portal.views import (
    account, audio, audit, dashboard, keys, members, playground, usage, voices,
)

app_name = "portal"

urlpatterns = [
    path("", dashboard.DashboardView.as_view(), name="dashboard"),
    path("switch/", account.SwitchTenantView.as_view(), name="switch-tenant"),
    path("keys/", keys.ApiKeyListView.as_view(), name="api-keys"),
    path("keys/<int:pk>/revoke/", keys.ApiKeyRevokeView.as_view(), name="api-key-revoke"),
    path("voices/", voices.VoiceListView.as_view(), name="voices"),
    path("voices/<int:pk>/row/", voices.VoiceRowView.as_view(), name="voice-row"),
    path("voices/<int:pk>/rename/", voices.VoiceRenameView.as_view(), name="voice-rename"),
    path("voices/<int:pk>/delete/", voices.VoiceDeleteView.as_view(), name="voice-delete"),
    path("voices/<int:pk>/reference/", voices.VoiceReferenceView.as_view(), name="voice-reference"),
    path("voices/<int:pk>/sample/", audio.voice_sample, name="voice-sample"),
    path("playground/", playground.PlaygroundView.as_view(), name="playground"),
    path("playground/audio/<uuid:request_id>/", audio.playground_audio, name="playground-audio"),
    path("usage/", usage.UsageLogView.as_view(), name="usage"),
    path("usage/export.csv", usage.UsageExportView.as_view(), name="usage-export"),
    path("members/", members.MemberListView.as_view(), name="members"),
    path("members/<int:pk>/role/", members.MemberRoleView.as_view(), name="member-role"),
    path("members/<int:pk>/remove/", members.MemberRemoveView.as_view(), name="member-remove"),
    path("members/invitations/<int:pk>/cancel/", members.InvitationCancelView.as_view(), name="invitation-cancel"),
    path("invitations/<str:token>/", account.InvitationAcceptView.as_view(), name="invitation"),
    path("audit/", audit.AuditLogView.as_view(), name="audit-log"),
]

# The navigation, in order: (label, URL name, owners and admins only).
NAVIGATION = [
    ("Dashboard", "portal:dashboard", False),
    ("API keys", "portal:api-keys", False),
    ("Voices", "portal:voices", False),
    ("Playground", "portal:playground", False),
    ("Usage", "portal:usage", False),
    ("Members", "portal:members", False),
    ("Audit log", "portal:audit-log", True),
]

