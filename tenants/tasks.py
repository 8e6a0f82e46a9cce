from celery import shared_task

from tenants.services import quota_alert_email


@shared_task(acks_late=True, ignore_result=True)
def quota_alert_email_task(alert_id: int) -> None:
    """Takes an id and is idempotent (see quota_alert_email), so a redelivered task sends nothing twice."""
    quota_alert_email(alert_id=alert_id)
