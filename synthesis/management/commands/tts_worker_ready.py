import socket

from django.core.management.base import BaseCommand, CommandError

from synthesis import heartbeats


def _not_ready(reason: str) -> CommandError:
    # One line on stderr: the kubelet shows it in the pod's events.
    return CommandError(" ".join(reason.split()), returncode=1)


class Command(BaseCommand):
    help = (
        "Readiness check for a tts_worker container (a Kubernetes exec probe): exit 0 when a worker on this "
        "host has a fresh heartbeat, has loaded its engines and serves at least one, else exit 1 with the reason on stderr."
    )

    def handle(self, *args, **options):
        # In a pod the host name is the pod's name; every heartbeat carries the host its worker runs on.
        host = socket.gethostname()
        try:
            live = heartbeats.live_workers()
        except Exception as exc:  # the cache (Redis) is unreachable: say so instead of a traceback
            raise _not_ready(f"cannot read worker heartbeats: {exc}") from None
        mine = [info for info in live if info.get("host") == host]
        if not mine:
            raise _not_ready(f"no tts_worker on {host} has a fresh heartbeat")
        loading = sorted({name for info in mine for name, engine in info["engines"].items() if engine.get("loading")})
        if loading:
            raise _not_ready(f"tts_worker on {host} is still loading {', '.join(loading)}")
        engines = [(name, engine) for info in mine for name, engine in info["engines"].items()]
        available = sorted({name for name, engine in engines if engine.get("available")})
        if not available:
            reasons = "; ".join(sorted({f"{name}: {engine.get('reason', 'unavailable')}" for name, engine in engines}))
            raise _not_ready(f"tts_worker on {host} has no available engine ({reasons or 'none loaded'})")
        worker_ids = ", ".join(info["worker_id"] for info in mine)
        self.stdout.write(f"ready: {worker_ids} on {host} serving {', '.join(available)}")
