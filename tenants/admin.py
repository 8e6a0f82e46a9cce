"""Operator admin over tenants, keys and usage. Writes with rules go through tenants.services."""
from django import forms
from django.contrib import admin
from django.db.models import OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce
from django.template.loader import render_to_string
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.cache import add_never_cache_headers

from tenants.models import ApiKey, AuditLogEntry, Invitation, QuotaAlert, Scope, Tenant, TenantMembership, UsageRecord
from tenants.selectors import month_start, tenant_month_summary
from tenants.services import api_key_issue, api_key_revoke, tenant_set_active, validate_scopes


class TenantMembershipInline(admin.TabularInline):
    model = TenantMembership
    extra = 0
    autocomplete_fields = ["user"]


def _characters_this_month():
    """Billed characters of the tenant this month, as a subquery so the changelist needs no query per row."""
    billed = (
        UsageRecord.objects.filter(tenant=OuterRef("pk"), created_at__gte=month_start())
        .exclude(status=UsageRecord.Status.ERROR)
        .values("tenant")
        .annotate(total=Sum("characters"))
        .values("total")
    )
    return Coalesce(Subquery(billed), 0)


@admin.register(Tenant)
class TenantAdmin(admin.ModelAdmin):
    list_display = [
        "slug",
        "name",
        "is_active",
        "requests_per_minute",
        "requests_per_hour",
        "max_concurrent_streams",
        "monthly_character_quota",
        "quota_used",
        "phrase_cache",
        "created_at",
    ]
    list_filter = ["is_active", "phrase_cache"]
    search_fields = ["slug", "name"]
    readonly_fields = ["usage_this_month"]
    inlines = [TenantMembershipInline]
    actions = ["suspend", "reactivate"]
    limit_fields = ["requests_per_minute", "requests_per_hour", "max_concurrent_streams", "monthly_character_quota"]

    def get_queryset(self, request):
        return super().get_queryset(request).annotate(characters_this_month=_characters_this_month())

    def get_fieldsets(self, request, obj=None):
        # Fields not named here (added to Tenant later) stay in the first section rather than vanish.
        fields = self.get_fields(request, obj)
        general = [name for name in fields if name not in self.limit_fields and name != "usage_this_month"]
        fieldsets = [
            (None, {"fields": general}),
            ("Limits and quota", {"fields": [name for name in self.limit_fields if name in fields]}),
        ]
        if obj is not None:
            fieldsets.append(("Usage this month (UTC)", {"fields": ["usage_this_month"]}))
        return fieldsets

    @admin.display(description="Quota used this month", ordering="characters_this_month")
    def quota_used(self, obj):
        used = getattr(obj, "characters_this_month", 0)
        quota = obj.monthly_character_quota
        if not quota:
            return f"{used:,} chars (no quota)"
        return f"{used:,} of {quota:,} ({100 * used / quota:.0f}%)"

    @admin.display(description="Usage")
    def usage_this_month(self, obj):
        if obj is None or obj.pk is None:
            return "—"
        return render_to_string("admin/tenants/tenant/usage_summary.html", {"usage": tenant_month_summary(tenant=obj)})

    @admin.action(description="Suspend selected tenants")
    def suspend(self, request, queryset):
        for tenant in queryset:
            tenant_set_active(tenant=tenant, active=False)
        self.message_user(request, f"Suspended {len(queryset)} tenant(s); their keys no longer authenticate.")

    @admin.action(description="Reactivate selected tenants")
    def reactivate(self, request, queryset):
        for tenant in queryset:
            tenant_set_active(tenant=tenant, active=True)
        self.message_user(request, f"Reactivated {len(queryset)} tenant(s).")


@admin.register(TenantMembership)
class TenantMembershipAdmin(admin.ModelAdmin):
    list_display = ["user", "tenant", "role"]
    list_filter = ["role"]
    search_fields = ["user__username", "user__email", "tenant__slug"]
    autocomplete_fields = ["user", "tenant"]
    list_select_related = ["user", "tenant"]


class _ScopesFormMixin(forms.Form):
    # scopes is a JSON list on the model; operators pick from the known scopes instead of typing JSON.
    scopes = forms.MultipleChoiceField(choices=Scope.choices, widget=forms.CheckboxSelectMultiple)

    def clean_scopes(self):
        return validate_scopes(self.cleaned_data["scopes"])

    def clean_expires_at(self):
        expires_at = self.cleaned_data.get("expires_at")
        if expires_at is not None and expires_at <= timezone.now():
            raise forms.ValidationError("Expiry must be in the future.")
        return expires_at


class ApiKeyAddForm(_ScopesFormMixin, forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["tenant", "name", "kind", "scopes", "expires_at"]


class ApiKeyChangeForm(_ScopesFormMixin, forms.ModelForm):
    class Meta:
        model = ApiKey
        fields = ["name", "scopes", "expires_at"]


class RevokedFilter(admin.SimpleListFilter):
    title = "revoked"
    parameter_name = "revoked"

    def lookups(self, request, model_admin):
        return [("yes", "Revoked"), ("no", "Not revoked")]

    def queryset(self, request, queryset):
        if self.value() == "yes":
            return queryset.filter(revoked_at__isnull=False)
        if self.value() == "no":
            return queryset.filter(revoked_at__isnull=True)
        return queryset


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin):
    list_display = [
        "key",
        "tenant",
        "name",
        "kind",
        "scope_list",
        "created_at",
        "last_used_at",
        "revoked_at",
        "expires_at",
    ]
    list_filter = ["kind", RevokedFilter, "tenant"]
    search_fields = ["tenant__slug", "name", "lookup_id"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    actions = ["revoke"]
    add_fieldsets = [(None, {"fields": ["tenant", "name", "kind", "scopes", "expires_at"]})]
    # secret_hash is never listed here, so it never reaches the page; kind is part of the plaintext,
    # so changing it would break the key, and revocation only happens through the action.
    fieldsets = [
        (None, {"fields": ["key", "tenant", "kind", "name", "scopes", "expires_at"]}),
        ("Lifecycle", {"fields": ["created_at", "last_used_at", "revoked_at"]}),
    ]
    change_readonly_fields = ["key", "tenant", "kind", "created_at", "last_used_at", "revoked_at"]

    @admin.display(description="Key")
    def key(self, obj):
        return f"{obj.display_prefix}…{obj.last_four}"

    @admin.display(description="Scopes")
    def scope_list(self, obj):
        return ", ".join(obj.scopes)

    def get_fieldsets(self, request, obj=None):
        return self.add_fieldsets if obj is None else self.fieldsets

    def get_readonly_fields(self, request, obj=None):
        return [] if obj is None else self.change_readonly_fields

    def get_form(self, request, obj=None, **kwargs):
        kwargs["form"] = ApiKeyAddForm if obj is None else ApiKeyChangeForm
        return super().get_form(request, obj, **kwargs)

    def save_model(self, request, obj, form, change):
        if change:  # name, scopes and expiry only; the form holds no secret fields
            return super().save_model(request, obj, form, change)
        # A new key must come from api_key_issue so only its hash is stored.
        data = form.cleaned_data
        issued = api_key_issue(
            tenant=data["tenant"],
            kind=data["kind"],
            scopes=data["scopes"],
            name=data["name"],
            expires_at=data["expires_at"],
        )
        # The admin goes on with `obj` (history entry, then response_add): make it the issued row.
        obj.pk = issued.api_key.pk
        obj.refresh_from_db()
        obj._state.adding = False
        # Held in memory for this one response; the admin history entry only records "added".
        obj._issued_plaintext = issued.plaintext

    def response_add(self, request, obj, post_url_continue=None):
        """The new key's plaintext, shown on this one page and never again. It is rendered into this response
        only: not flashed through a message (which travels in a cookie or the session table), not stored,
        and the page is not cached, so neither a reload nor Back brings it back."""
        plaintext = getattr(obj, "_issued_plaintext", None)
        if plaintext is None:
            return super().response_add(request, obj, post_url_continue)
        context = {
            **self.admin_site.each_context(request),
            "title": "Copy the new API key",
            "opts": self.opts,
            "api_key": obj,
            "plaintext": plaintext,
        }
        response = TemplateResponse(request, "admin/tenants/apikey/issued.html", context)
        add_never_cache_headers(response)  # Cache-Control: no-store
        return response

    @admin.action(description="Revoke selected keys")
    def revoke(self, request, queryset):
        for api_key in queryset:
            api_key_revoke(api_key=api_key)
        self.message_user(request, f"Revoked {len(queryset)} key(s); they no longer authenticate.")


class ReadOnlyAdmin(admin.ModelAdmin):
    """Records operators read but never write: history the service appends to."""

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False

    def has_delete_permission(self, request, obj=None):
        return False


@admin.register(UsageRecord)
class UsageRecordAdmin(ReadOnlyAdmin):
    """Read-only: usage is append-only billing history, written only by the synthesis path."""

    list_display = [
        "request_id",
        "tenant",
        "voice_id",
        "engine",
        "characters",
        "audio_seconds",
        "time_to_first_audio_ms",
        "total_ms",
        "status",
        "error_code",
        "cached",
        "created_at",
    ]
    list_filter = ["status", "tenant", "voice_id", "engine", "cached"]
    search_fields = ["request_id", "voice_id"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant"]
    # COUNT(*) over the whole usage table gets slow as it grows; the filtered count is enough.
    show_full_result_count = False

    # Note: read-only also stops deleting a tenant that has usage in the admin; suspend it instead.


@admin.register(QuotaAlert)
class QuotaAlertAdmin(admin.ModelAdmin):
    """The quota thresholds tenants passed and when their owners were emailed. Read-only; deleting one lets it be
    sent again if usage passes it again this month."""

    list_display = ["tenant", "month", "percent", "characters_used", "quota", "created_at", "emailed_at"]
    list_filter = ["percent", "month", "tenant"]
    list_select_related = ["tenant"]

    def has_add_permission(self, request):
        return False

    def has_change_permission(self, request, obj=None):
        return False


@admin.register(AuditLogEntry)
class AuditLogEntryAdmin(ReadOnlyAdmin):
    """What tenant staff did in the portal (keys, voices, members), as their owners see it there."""

    list_display = ["created_at", "tenant", "actor_email", "action", "target"]
    list_filter = ["action", "tenant"]
    search_fields = ["actor_email", "action", "target"]
    date_hierarchy = "created_at"
    list_select_related = ["tenant"]


@admin.register(Invitation)
class InvitationAdmin(admin.ModelAdmin):
    """Invitations staff sent to colleagues. The link's token is shown nowhere (only its hash is stored); an
    operator may delete an invitation to withdraw it."""

    list_display = ["email", "tenant", "role", "invited_by", "created_at", "expires_at", "accepted_at"]
    list_filter = ["role", "tenant"]
    search_fields = ["email", "tenant__slug"]
    exclude = ["token_hash"]
    list_select_related = ["tenant", "invited_by"]

    def has_add_permission(self, request):
        return False  # invitations are sent from the portal, which emails the link

    def has_change_permission(self, request, obj=None):
        return False
