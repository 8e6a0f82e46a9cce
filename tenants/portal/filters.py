"""The usage log's filters (django-filter). Every choice comes from the current tenant: its keys and the voices its
rows name, so another tenant's key id is an invalid choice, never a way to see its rows."""
import django_filters
from django import forms

from tenants import selectors
from tenants.models import ApiKey, UsageRecord

_DATE = forms.DateInput(attrs={"type": "date"})


def _key_label(api_key: ApiKey) -> str:
    return f"{api_key.name or 'unnamed'} …{api_key.last_four}" + (" (revoked)" if api_key.is_revoked else "")


class UsageFilter(django_filters.FilterSet):
    date_from = django_filters.DateFilter(field_name="created_at", lookup_expr="date__gte", label="From", widget=_DATE,
                                          help_text="UTC day, included.")
    date_to = django_filters.DateFilter(field_name="created_at", lookup_expr="date__lte", label="To", widget=_DATE,
                                        help_text="UTC day, included.")
    voice = django_filters.ChoiceFilter(field_name="voice_id", label="Voice", empty_label="Any voice")
    api_key = django_filters.ModelChoiceFilter(field_name="api_key", label="API key", empty_label="Any key",
                                               queryset=ApiKey.objects.none())
    status = django_filters.ChoiceFilter(field_name="status", choices=UsageRecord.Status.choices, label="Status",
                                         empty_label="Any status")

    class Meta:
        model = UsageRecord
        fields = []  # the filters above only

    def __init__(self, data=None, *, tenant, **kwargs):
        super().__init__(data, queryset=selectors.tenant_usage_log(tenant=tenant), **kwargs)
        self.filters["voice"].extra["choices"] = [(v, v) for v in selectors.tenant_usage_voice_ids(tenant=tenant)]
        keys = tenant.api_keys.order_by("revoked_at", "-created_at")
        self.filters["api_key"].queryset = keys
        self.form.fields["api_key"].queryset = keys
        self.form.fields["api_key"].label_from_instance = _key_label

    @property
    def qs(self):
        """Invalid filters (a foreign key id, a malformed date) match nothing rather than being ignored: the CSV
        must never hold more than the page said it would."""
        if self.is_bound and not self.form.is_valid():
            return self.queryset.none()
        return super().qs
