"""Quota alerts: when recorded usage passes a threshold of TTS_QUOTA_ALERT_PERCENTS, the tenant's owners are
emailed once for it per month (after the usage row is committed); admins, members and other tenants are not."""
import uuid
from datetime import timedelta

import pytest
from django.core import mail

from callwaiting.celery import app as celery_app
from tenants.models import QuotaAlert, UsageRecord
from tenants.selectors import month_start
from tenants.services import usage_record
from tests.factories import staff_member

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def _tasks_in_process(settings):
    """The email task runs in-process (as in the embedded mode) whatever the broker of this test run."""
    settings.TTS_QUOTA_ALERT_PERCENTS = [80, 100]
    eager = celery_app.conf.task_always_eager
    celery_app.conf.task_always_eager = True
    yield
    celery_app.conf.task_always_eager = eager


@pytest.fixture
def quota_tenant(portal_tenant, owner, tenant_admin, member):
    portal_tenant.monthly_character_quota = 1000
    portal_tenant.save()
    staff_member(portal_tenant, "owner", email="second-owner@acme.example")
    return portal_tenant


def use(tenant, characters, *, django_capture_on_commit_callbacks, status="success", **fields):
    with django_capture_on_commit_callbacks(execute=True):
        return usage_record(request_id=uuid.uuid4(), tenant_id=tenant.pk, api_key_id=None, characters=characters,
                            status=status, **fields)


@pytest.fixture
def spend(django_capture_on_commit_callbacks):
    def spend(tenant, characters, **fields):
        return use(tenant, characters, django_capture_on_commit_callbacks=django_capture_on_commit_callbacks, **fields)

    return spend


def test_owners_are_emailed_once_per_threshold(quota_tenant, spend):
    spend(quota_tenant, 500)
    assert mail.outbox == []
    spend(quota_tenant, 300)  # 80%
    (warning,) = mail.outbox
    assert sorted(warning.to) == ["owner@acme.example", "second-owner@acme.example"]
    assert "80% of its monthly quota" in warning.subject and "Acme Calls" in warning.subject
    assert "800 of its 1000 characters" in warning.body and "200 characters are left" in warning.body
    spend(quota_tenant, 100)  # 90%: nothing new passed
    assert len(mail.outbox) == 1
    spend(quota_tenant, 100)  # 100%
    assert len(mail.outbox) == 2 and "has used its monthly quota" in mail.outbox[1].subject
    assert "refused" in mail.outbox[1].body
    spend(quota_tenant, 50)  # past it: still once
    assert len(mail.outbox) == 2
    assert set(QuotaAlert.objects.filter(tenant=quota_tenant).values_list("percent", flat=True)) == {80, 100}


def test_a_jump_past_both_thresholds_sends_one_email(quota_tenant, spend):
    spend(quota_tenant, 1200)
    (email,) = mail.outbox
    assert "has used its monthly quota" in email.subject
    assert QuotaAlert.objects.filter(tenant=quota_tenant).count() == 2  # 80% is not sent later either
    spend(quota_tenant, 10)
    assert len(mail.outbox) == 1


def test_unbilled_rows_do_not_count(quota_tenant, spend):
    quota_tenant.phrase_cache_billed = False
    quota_tenant.save()
    spend(quota_tenant, 5000, status="error", error_code="engine_failed")
    spend(quota_tenant, 5000, cached=True)  # the phrase cache is not billed on this plan
    assert mail.outbox == [] and not QuotaAlert.objects.exists()
    quota_tenant.phrase_cache_billed = True
    quota_tenant.save()
    spend(quota_tenant, 10, cached=True)  # on this plan cached characters count: 10,010 of 1,000
    assert len(mail.outbox) == 1


def test_last_months_alerts_do_not_silence_this_months(quota_tenant, spend):
    last_month = (month_start() - timedelta(days=1)).replace(day=1).date()
    QuotaAlert.objects.create(tenant=quota_tenant, month=last_month, percent=80, characters_used=900, quota=1000)
    UsageRecord.objects.create(tenant=quota_tenant, characters=900, status="success",
                               created_at=month_start() - timedelta(hours=1))  # last month's usage
    spend(quota_tenant, 700)
    assert mail.outbox == []
    spend(quota_tenant, 100)
    assert len(mail.outbox) == 1 and "80%" in mail.outbox[0].subject


def test_tenants_without_a_quota_or_thresholds_get_no_email(portal_tenant, owner, spend, settings, other_tenant):
    spend(portal_tenant, 10**9)
    other_tenant.monthly_character_quota = 10
    other_tenant.save()
    settings.TTS_QUOTA_ALERT_PERCENTS = []
    spend(other_tenant, 100)
    assert mail.outbox == [] and not QuotaAlert.objects.exists()


def test_only_the_tenant_that_passed_it_is_told(quota_tenant, other_tenant, spend):
    other_tenant.monthly_character_quota = 1000
    other_tenant.save()
    spend(other_tenant, 900)
    (email,) = mail.outbox
    assert email.to == ["owner@globex.example"]


def test_the_email_is_sent_after_the_usage_row_commits(quota_tenant, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        usage_record(request_id=uuid.uuid4(), tenant_id=quota_tenant.pk, api_key_id=None, characters=900,
                     status="success")
    assert mail.outbox == [] and len(callbacks) == 1
    callbacks[0]()
    callbacks[0]()  # a redelivered task sends nothing twice
    assert len(mail.outbox) == 1


def test_a_failing_check_never_loses_the_usage_row(quota_tenant, monkeypatch, spend):
    from tenants import services

    def broken(**kwargs):
        raise RuntimeError("alerts are down")

    monkeypatch.setattr(services, "quota_alerts_check", broken)
    row = spend(quota_tenant, 900)
    assert UsageRecord.objects.filter(pk=row.pk).exists() and mail.outbox == []


def test_operators_see_the_alerts_sent(quota_tenant, spend, admin_client):
    spend(quota_tenant, 850)
    page = admin_client.get("/admin/tenants/quotaalert/").content.decode()
    assert str(quota_tenant) in page and ">80<" in page
