from rest_framework import serializers

from voices.models import Voice


class VoiceSerializer(serializers.ModelSerializer):
    available = serializers.SerializerMethodField()
    unavailable_reason = serializers.SerializerMethodField()

    class Meta:
        model = Voice
        fields = [
            "voice_id", "name", "description", "language", "languages", "gender", "accent", "engine",
            "is_preloaded", "status", "status_reason", "available", "unavailable_reason", "created_at", "updated_at",
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


class VoiceUploadSerializer(serializers.Serializer):
    voice_id = serializers.SlugField(max_length=100)
    name = serializers.CharField(max_length=200)
    description = serializers.CharField(required=False, allow_blank=True, default="")
    language = serializers.CharField(max_length=16, default="en")
    audio_file = serializers.FileField()


class VoiceUpdateSerializer(serializers.Serializer):
    name = serializers.CharField(max_length=200, required=False)
    description = serializers.CharField(required=False, allow_blank=True)

    def validate(self, attrs):
        if not attrs:
            raise serializers.ValidationError("Send name and/or description.")
        return attrs
