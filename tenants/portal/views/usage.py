"""The usage log: the current tenant's request rows, filtered and paginated, and the same filtered rows as CSV."""
import csv

from django.core.paginator import Paginator
from django.http import StreamingHttpResponse
from django.utils import timezone
from django.views.generic import TemplateView
from django.views import View

from tenants.portal.filters import UsageFilter
from tenants.portal.mixins import TenantPortalMixin

PAGE_SIZE = 50

CSV_COLUMNS = [
    ("created_at", lambda row: row.created_at.isoformat()),
    ("request_id", lambda row: str(row.request_id)),
    ("api_key", lambda row: row.api_key.name if row.api_key else ""),
    ("api_key_last_four", lambda row: row.api_key.last_four if row.api_key else ""),
    ("voice_id", lambda row: row.voice_id),
    ("engine", lambda row: row.engine),
    ("language", lambda row: row.language),
    ("characters", lambda row: row.characters),
    ("audio_seconds", lambda row: row.audio_seconds),
    ("time_to_first_audio_ms", lambda row: "" if row.time_to_first_audio_ms is None else row.time_to_first_audio_ms),
    ("total_ms", lambda row: row.total_ms),
    ("status", lambda row: row.status),
    ("error_code", lambda row: row.error_code),
    ("cached", lambda row: "true" if row.cached else "false"),
    ("attempts", lambda row: row.attempts),
]


def _cell(value):
    """A text cell that a spreadsheet would run as a formula (a key's name is the tenant's own text) is quoted."""
    if isinstance(value, str) and value[:1] in ("=", "+", "-", "@", "\t", "\r"):
        return "'" + value
    return value


class _Echo:
    """csv.writer's file: hands each formatted line back instead of storing it, so rows stream."""

    def write(self, line):
        return line


class UsageLogView(TenantPortalMixin, TemplateView):
    template_name = "portal/usage.html"

    def get_context_data(self, **kwargs):
        context = super().get_context_data(**kwargs)
        usage_filter = UsageFilter(self.request.GET or None, tenant=self.tenant)
        page = Paginator(usage_filter.qs, PAGE_SIZE).get_page(self.request.GET.get("page"))
        query = self.request.GET.copy()
        query.pop("page", None)
        context.update(filter=usage_filter, page_obj=page, rows=page.object_list, filter_query=query.urlencode())
        return context

    def render_to_response(self, context, **kwargs):
        if context["filter"].is_bound and not context["filter"].form.is_valid():
            kwargs["status"] = 400
        return super().render_to_response(context, **kwargs)


class UsageExportView(TenantPortalMixin, View):
    """GET with the page's filters: exactly the rows the page lists (all pages), streamed."""

    def get(self, request):
        usage_filter = UsageFilter(request.GET or None, tenant=self.tenant)
        writer = csv.writer(_Echo())

        def lines():
            yield writer.writerow([name for name, _ in CSV_COLUMNS])
            for row in usage_filter.qs.iterator(chunk_size=2000):
                yield writer.writerow([_cell(value(row)) for _, value in CSV_COLUMNS])

        filename = f"usage-{self.tenant.slug}-{timezone.now():%Y%m%d-%H%M%S}.csv"
        refused = usage_filter.is_bound and not usage_filter.form.is_valid()  # the header only, no rows
        response = StreamingHttpResponse(lines(), content_type="text/csv; charset=utf-8",
                                         status=400 if refused else 200)
        response["Content-Disposition"] = f'attachment; filename="{filename}"'
        return response
