from django.contrib import admin

from voices import services
from voices.models import Voice


@admin.register(Voice)
class VoiceAdmin(admin.ModelAdmin):
    # Preloaded voices come from config/voices.json: `manage.py sync_voices` overwrites edits made here.
    list_display = ["voice_id", "name", "owner", "language", "engine", "is_preloaded", "status"]
    list_filter = ["engine", "language", "status", "is_preloaded"]
    search_fields = ["voice_id", "name", "tenant__slug"]
    list_select_related = ["tenant"]
    autocomplete_fields = ["tenant"]
    readonly_fields = ["created_at", "updated_at"]

    @admin.display(description="Tenant", ordering="tenant__slug")
    def owner(self, obj):
        return obj.tenant.slug if obj.tenant_id else "preloaded"

    # Through the service, as the API deletes: a voice's files and its phrase-cache audio go with it.
    def delete_model(self, request, obj):
        services.voice_delete(voice=obj)

    def delete_queryset(self, request, queryset):
        for voice in queryset:
            services.voice_delete(voice=voice)
