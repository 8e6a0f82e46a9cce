import asyncio
import signal

from django.conf import settings
from django.core.management.base import BaseCommand

from synthesis.worker import ModelWorker


class Command(BaseCommand):
    help = "Run a model worker: load engines once and serve synthesis jobs from the job queue (Redis Streams)."

    def add_arguments(self, parser):
        parser.add_argument("--engines", default=",".join(settings.TTS_ENGINES))
        parser.add_argument("--capacity", type=int, default=0,
                            help="jobs served at once (default: TTS_WORKER_CAPACITY, or XTTS's batch slots if more)")
        parser.add_argument("--device", default=settings.XTTS_DEVICE, help="e.g. cuda:0 (default: CUDA if any)")

    def handle(self, *args, engines, capacity, device, **options):
        settings.XTTS_DEVICE = device  # one worker per GPU: each process is pinned to its own device
        names = [name.strip() for name in engines.split(",") if name.strip()]
        asyncio.run(self._serve(names, capacity))

    async def _serve(self, names, capacity):
        worker = ModelWorker(engine_names=names, capacity=capacity)
        loop = asyncio.get_running_loop()
        # SIGTERM: stop taking jobs, finish the ones in flight, exit.
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, worker.stop)
        worker.start_heartbeat()  # while the engines load, health and requests say "loading"
        await worker.load()
        self.stderr.write(f"tts_worker {worker.worker_id}: {worker.describe()['engines']}")
        await worker.run()
