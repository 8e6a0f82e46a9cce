from celery import shared_task

from voices.services import voice_process, voices_requeue_stale


@shared_task(acks_late=True, ignore_result=True)
def voice_process_task(voice_id: int) -> None:
    """Takes an id and is idempotent (see voice_process), so a redelivered task is harmless."""
    voice_process(voice_id=voice_id)


@shared_task(ignore_result=True)
def voices_requeue_stale_task() -> dict[str, int]:
    """Periodic (celery beat): retry uploads whose processing task was lost."""
    return voices_requeue_stale()
