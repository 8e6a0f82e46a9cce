from django.conf import settings
from rest_framework import serializers, status

from callwaiting.errors import ApiError

AUDIO_FORMATS = ("wav", "pcm")


class SynthesizeSerializer(serializers.Serializer):
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    ssml = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    voice_id = serializers.CharField(required=False, default="default", max_length=100)
    language = serializers.CharField(required=False, allow_blank=True, default="", max_length=16)
    streaming = serializers.BooleanField(required=False, default=True)
    speed = serializers.FloatField(required=False, default=1.0, min_value=0.5, max_value=2.0)
    format = serializers.ChoiceField(choices=AUDIO_FORMATS, required=False, default="wav")

    def validate(self, attrs):
        if attrs["text"].strip() and attrs["ssml"].strip():
            raise serializers.ValidationError("Send either text or ssml, not both.")
        return attrs


class StreamSynthesizeSerializer(SynthesizeSerializer):
    """A `synthesize` message on the WebSocket API (/v1/stream). Every utterance there streams, and the format
    defaults to raw PCM: phone pipelines feed the frames straight into a call's media stream, where a file
    header is only bytes to strip."""

    streaming = None
    format = serializers.ChoiceField(choices=AUDIO_FORMATS, required=False, default="pcm")

    def validate(self, attrs):
        return {**super().validate(attrs), "streaming": True}


class StreamTextSerializer(serializers.Serializer):
    """A `text` message on /v1/stream: a piece of text as an LLM produces it, optionally with the fields of a
    `synthesize` message (voice_id, language, speed, format), which apply from this piece on until changed.
    Only the fields sent are in validated_data, besides `text` and `flush`."""

    text = serializers.CharField(allow_blank=True, trim_whitespace=False)
    flush = serializers.BooleanField(required=False, default=False)

    def get_fields(self):
        fields = super().get_fields()
        for name, field in StreamSynthesizeSerializer().get_fields().items():
            if name not in fields and name != "ssml":
                field.required, field.default = False, serializers.empty  # absent: the earlier value stays
                fields[name] = field
        return fields

    def validate(self, attrs):
        if "ssml" in self.initial_data:
            raise serializers.ValidationError({"ssml": "text messages carry plain text; send SSML in a synthesize message."})
        if "request_id" in self.initial_data:
            raise serializers.ValidationError(
                {"request_id": "each sentence of streamed text gets the server's request id (in its start frame)."}
            )
        if len(attrs["text"]) > settings.TTS_MAX_TEXT_CHARS:
            raise ApiError("text_too_long", f"A text piece has at most {settings.TTS_MAX_TEXT_CHARS} characters.",
                           status.HTTP_413_REQUEST_ENTITY_TOO_LARGE)
        return attrs
