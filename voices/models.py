from django.db import models
from django.db.models import Q
from django.utils import timezone


class Voice(models.Model):
    """A voice a tenant can synthesize with: preloaded (tenant is null, from config/voices.json) or its own."""

    class Status(models.TextChoices):
        READY = "ready"
        PROCESSING = "processing"
        FAILED = "failed"
        UNAVAILABLE = "unavailable"  # a preloaded voice whose assets are not installed here

    tenant = models.ForeignKey(
        "tenants.Tenant", on_delete=models.CASCADE, null=True, blank=True, related_name="voices"
    )
    voice_id = models.SlugField(max_length=100)
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    language = models.CharField(max_length=16, default="en")
    gender = models.CharField(max_length=32, blank=True)
    accent = models.CharField(max_length=64, blank=True)
    engine = models.CharField(max_length=32)
    engine_settings = models.JSONField(default=dict, blank=True)
    is_preloaded = models.BooleanField(default=False)
    status = models.CharField(max_length=16, choices=Status.choices, default=Status.READY)
    status_reason = models.TextField(blank=True)
    # Storage names (default storage) of a cloned voice's files: the upload until it is processed, then the
    # normalized reference clip; its conditioning latents are named in engine_settings["latents"].
    source_audio = models.CharField(max_length=300, blank=True)
    reference_audio = models.CharField(max_length=300, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["voice_id"]
        constraints = [
            models.UniqueConstraint(fields=["tenant", "voice_id"], name="unique_voice_per_tenant"),
            models.UniqueConstraint(
                fields=["voice_id"], condition=Q(tenant__isnull=True), name="unique_preloaded_voice"
            ),
        ]

    def __str__(self) -> str:
        owner = self.tenant.slug if self.tenant_id else "preloaded"
        return f"{self.voice_id} ({owner})"

    @property
    def stored_files(self) -> list[str]:
        return [name for name in (self.source_audio, self.reference_audio, self.engine_settings.get("latents")) if name]

    @property
    def languages(self) -> list[str]:
        """Languages this voice speaks: the engine settings may widen it beyond its own (multilingual models)."""
        return list(self.engine_settings.get("languages") or [self.language])
