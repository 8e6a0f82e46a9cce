from django.apps import AppConfig


class TenantsConfig(AppConfig):
    name = "tenants"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from tenants.models import ApiKey, Tenant
        from tenants.selectors import API_KEY_ROWS

        API_KEY_ROWS.watch(ApiKey, Tenant)  # a key's row carries its tenant's: either changing drops it
