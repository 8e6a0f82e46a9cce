"""Celery app: voice processing and other background work. `celery -A callwaiting worker` in production."""
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "callwaiting.settings")

app = Celery("callwaiting")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
