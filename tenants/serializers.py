"""What tenant endpoints answer, for the API schema (the views build these dicts in tenants.selectors)."""
from rest_framework import serializers


class LatencySerializer(serializers.Serializer):
    avg = serializers.FloatField(allow_null=True)
    max = serializers.FloatField(allow_null=True)


class UsageAggregateSerializer(serializers.Serializer):
    requests = serializers.IntegerField()
    characters = serializers.IntegerField(help_text="Characters billed.")
    audio_seconds = serializers.FloatField()
    errors = serializers.IntegerField()
    client_disconnects = serializers.IntegerField()
    time_to_first_audio_ms = LatencySerializer()


class UsageDaySerializer(UsageAggregateSerializer):
    date = serializers.DateField(help_text="UTC day.")


class UsageVoiceSerializer(UsageAggregateSerializer):
    voice_id = serializers.CharField()


class PeriodSerializer(serializers.Serializer):
    start = serializers.DateTimeField()
    end = serializers.DateTimeField(help_text="Excluded.")


class QuotaSerializer(serializers.Serializer):
    monthly_characters = serializers.IntegerField(allow_null=True, help_text="null: no quota.")
    used_this_month = serializers.IntegerField()


class LimitsSerializer(serializers.Serializer):
    requests_per_minute = serializers.IntegerField()
    requests_per_hour = serializers.IntegerField()
    max_concurrent_streams = serializers.IntegerField()


class TenantStatsSerializer(serializers.Serializer):
    tenant_id = serializers.CharField()
    period = PeriodSerializer()
    totals = UsageAggregateSerializer()
    by_day = UsageDaySerializer(many=True)
    by_voice = UsageVoiceSerializer(many=True)
    errors_by_code = serializers.DictField(child=serializers.IntegerField(), help_text="Failed requests per error code.")
    quota = QuotaSerializer()
    limits = LimitsSerializer()
