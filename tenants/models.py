import uuid

from django.conf import settings
from django.db import models
from django.utils import timezone


class Tenant(models.Model):
    slug = models.SlugField(max_length=64, unique=True)
    name = models.CharField(max_length=200)
    is_active = models.BooleanField(default=True, help_text="Suspended tenants cannot authenticate.")
    requests_per_minute = models.PositiveIntegerField(default=1000)
    requests_per_hour = models.PositiveIntegerField(default=10000)
    monthly_character_quota = models.PositiveBigIntegerField(
        null=True, blank=True, help_text="Characters of synthesis per calendar month (UTC); empty means no quota."
    )
    max_concurrent_streams = models.PositiveIntegerField(default=50)
    phrase_cache = models.BooleanField(
        default=False,
        help_text="Cache synthesized phrases for every request of this tenant (a request's own `cache` field "
        "overrides it either way): a repeated phrase is served from the cache in about a millisecond.",
    )
    phrase_cache_billed = models.BooleanField(
        default=True,
        help_text="Whether characters served from the phrase cache count against the monthly character quota.",
    )
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["slug"]

    def __str__(self) -> str:
        return self.slug


class TenantMembership(models.Model):
    """A Django user who may manage a tenant in the portal. Owners and admins manage keys and members (only owners
    grant or take away the owner role); members see everything and change nothing."""

    class Role(models.TextChoices):
        OWNER = "owner"
        ADMIN = "admin"
        MEMBER = "member"

    MANAGER_ROLES = (Role.OWNER, Role.ADMIN)

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="tenant_memberships")
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="memberships")
    role = models.CharField(max_length=16, choices=Role.choices, default=Role.MEMBER)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["user", "tenant"], name="unique_membership")]

    def __str__(self) -> str:
        return f"{self.user} @ {self.tenant}"

    @property
    def is_manager(self) -> bool:
        return self.role in self.MANAGER_ROLES

    @property
    def is_owner(self) -> bool:
        return self.role == self.Role.OWNER


class Invitation(models.Model):
    """An invitation to join a tenant, sent by email as a link holding a token: only the token's hash is stored,
    and the link works once, until `expires_at`."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="invitations")
    email = models.EmailField()
    role = models.CharField(max_length=16, choices=TenantMembership.Role.choices, default=TenantMembership.Role.MEMBER)
    token_hash = models.CharField(max_length=64, unique=True, editable=False)
    invited_by = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    expires_at = models.DateTimeField()
    accepted_at = models.DateTimeField(null=True, blank=True)
    accepted_by = models.ForeignKey(
        settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+"
    )

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.email} -> {self.tenant} ({self.role})"

    def is_usable(self, now=None) -> bool:
        return self.accepted_at is None and self.expires_at > (now or timezone.now())


class AuditLogEntry(models.Model):
    """A staff action on a tenant (key created or revoked, member invited, role changed...), append-only. The
    actor's email is kept as it was, so the entry still says who once the user is gone."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="audit_log")
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.SET_NULL, null=True, blank=True, related_name="+")
    actor_email = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=64, help_text="e.g. api_key.created, member.invited")
    target = models.CharField(max_length=200, blank=True, help_text="What was acted on, as staff would name it.")
    details = models.JSONField(default=dict, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["tenant", "-created_at"], name="audit_tenant_created")]
        verbose_name = "audit log entry"
        verbose_name_plural = "audit log"

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_email} {self.action} {self.target}"


class QuotaAlert(models.Model):
    """A monthly-quota threshold a tenant passed: one row per tenant, month and threshold, so its owners are
    emailed once for each (the unique constraint settles a race between two requests crossing it together)."""

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="quota_alerts")
    month = models.DateField(help_text="The first day of the month (UTC) whose quota was passed.")
    percent = models.PositiveSmallIntegerField(help_text="The threshold passed, in percent of the monthly quota.")
    characters_used = models.PositiveBigIntegerField(help_text="Characters billed this month when it was passed.")
    quota = models.PositiveBigIntegerField(help_text="The monthly quota then.")
    created_at = models.DateTimeField(default=timezone.now)
    emailed_at = models.DateTimeField(null=True, blank=True, help_text="When its owners were emailed.")

    class Meta:
        ordering = ["-created_at", "-percent"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "month", "percent"], name="quota_alert_once_per_month"),
        ]

    def __str__(self) -> str:
        return f"{self.tenant} {self.month:%Y-%m} {self.percent}%"


class Scope(models.TextChoices):
    SYNTHESIZE = "synthesize"
    VOICES = "voices"
    UPLOAD = "upload"
    ADMIN = "admin"


class ApiKey(models.Model):
    class Kind(models.TextChoices):
        PROD = "prod"
        TEST = "test"
        ADMIN = "admin"

    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="api_keys")
    name = models.CharField(max_length=100, blank=True)
    kind = models.CharField(max_length=8, choices=Kind.choices, default=Kind.TEST)
    lookup_id = models.CharField(max_length=12, unique=True, editable=False)
    secret_hash = models.CharField(max_length=64, editable=False)
    last_four = models.CharField(max_length=4, editable=False)
    scopes = models.JSONField(default=list, help_text="Any of: synthesize, voices, upload, admin.")
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        verbose_name = "API key"

    def __str__(self) -> str:
        return f"{self.display_prefix}…{self.last_four} ({self.tenant.slug})"

    @property
    def display_prefix(self) -> str:
        return f"sk_{self.kind}_{self.lookup_id}"

    @property
    def is_revoked(self) -> bool:
        return self.revoked_at is not None

    def is_expired(self, now=None) -> bool:
        return self.expires_at is not None and self.expires_at <= (now or timezone.now())

    def has_scope(self, scope: str) -> bool:
        return scope in self.scopes


class UsageRecord(models.Model):
    """One row per synthesis request. A client may name its request (X-Request-ID, or request_id on the
    WebSocket) so that a retry is billed once: the id is the tenant's own, and a retry updates its row (the
    best outcome of its attempts) instead of adding one."""

    class Status(models.TextChoices):
        SUCCESS = "success"
        ERROR = "error"
        CLIENT_DISCONNECTED = "client_disconnected"

    request_id = models.UUIDField(default=uuid.uuid4)
    request_fingerprint = models.CharField(
        max_length=64, blank=True, help_text="SHA-256 of what was asked: a reused request id must ask the same."
    )
    attempts = models.PositiveIntegerField(default=1)
    tenant = models.ForeignKey(Tenant, on_delete=models.CASCADE, related_name="usage_records")
    api_key = models.ForeignKey(ApiKey, on_delete=models.SET_NULL, null=True, blank=True, related_name="usage_records")
    voice_id = models.CharField(max_length=100, blank=True)
    engine = models.CharField(max_length=32, blank=True)
    language = models.CharField(max_length=16, blank=True)
    characters = models.PositiveIntegerField(default=0)
    audio_seconds = models.FloatField(default=0.0)
    time_to_first_audio_ms = models.FloatField(null=True, blank=True)
    total_ms = models.FloatField(default=0.0)
    status = models.CharField(max_length=24, choices=Status.choices)
    error_code = models.CharField(max_length=64, blank=True)
    cached = models.BooleanField(default=False, help_text="Served from the phrase cache: no model worker ran.")
    created_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["tenant", "created_at"], name="usage_tenant_created")]
        constraints = [models.UniqueConstraint(fields=["tenant", "request_id"], name="usage_request_id_per_tenant")]

    def __str__(self) -> str:
        return f"{self.request_id} {self.status}"
