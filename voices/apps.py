from django.apps import AppConfig


class VoicesConfig(AppConfig):
    name = "voices"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self):
        from voices.models import Voice
        from voices.selectors import VOICE_ROWS

        VOICE_ROWS.watch(Voice)
