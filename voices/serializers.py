from rest_framework import serializers

from voices.models import Voice


class VoiceSerializer(serializers.ModelSerializer):
    available = serializers.SerializerMethodField()
    unavailable_reason = serializers.SerializerMethodField()

    class Meta:
        model = Voice
        fields = [
            "voice_id", "name", "description", "language", "languages", "gender", "accent", "engine",
            "is_preloaded", "status", "available", "unavailable_reason",
        ]

    def _engine_state(self, voice) -> dict:
        return self.context["engines"].get(voice.engine) or {"available": False, "reason": "engine not configured"}

    def get_available(self, voice) -> bool:
        return voice.status == Voice.Status.READY and self._engine_state(voice)["available"]

    def get_unavailable_reason(self, voice) -> str | None:
        if voice.status != Voice.Status.READY:
            return voice.status_reason or f"voice is {voice.status}"
        state = self._engine_state(voice)
        return None if state["available"] else state["reason"]
