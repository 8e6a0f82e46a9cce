from rest_framework import serializers

AUDIO_FORMATS = ("wav", "pcm")


class SynthesizeSerializer(serializers.Serializer):
    text = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    ssml = serializers.CharField(required=False, allow_blank=True, trim_whitespace=False, default="")
    voice_id = serializers.CharField(required=False, default="default", max_length=100)
    language = serializers.CharField(required=False, allow_blank=True, default="", max_length=16)
    streaming = serializers.BooleanField(required=False, default=True)
    speed = serializers.FloatField(required=False, default=1.0, min_value=0.5, max_value=2.0)
    format = serializers.ChoiceField(choices=AUDIO_FORMATS, required=False, default="wav")
    # The phrase cache (synthesis/phrase_cache.py): true or false decides for this request; absent (null), the
    # tenant's setting does.
    cache = serializers.BooleanField(required=False, allow_null=True, default=None)

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
