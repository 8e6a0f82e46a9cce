"""`manage.py tts_worker_ready`: the readiness probe of a tts-worker pod (helm/callwaiting-tts)."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from asgiref.sync import async_to_sync
from django.core.management import CommandError, call_command

from synthesis import heartbeats
from synthesis.worker import ModelWorker

ROOT = Path(__file__).resolve().parents[2]


def announce(engines: list[str], **overrides) -> str:
    """A real worker loads its engines and sends one heartbeat, as its heartbeat loop does; returns its id."""
    worker = ModelWorker(engine_names=engines, capacity=1)
    async_to_sync(worker.load)()
    heartbeats.worker_heartbeat(worker_id=worker.worker_id, info={**worker.describe(), **overrides})
    return worker.worker_id


def probe(capsys) -> str:
    call_command("tts_worker_ready")
    return capsys.readouterr().out


def probe_fails(capsys) -> str:
    with pytest.raises(CommandError) as failure:
        call_command("tts_worker_ready")
    assert failure.value.returncode == 1
    message = str(failure.value)
    assert "\n" not in message
    return message


def test_ready_when_a_worker_on_this_host_has_a_fresh_heartbeat_with_an_engine(capsys):
    worker_id = announce(["espeak"])
    out = probe(capsys)
    assert worker_id in out and "espeak" in out


def test_ready_when_one_engine_of_several_is_available(capsys, settings, tmp_path):
    settings.XTTS_MODEL_DIR = str(tmp_path)  # no weights there: xtts cannot load
    announce(["espeak", "xtts"])
    assert "serving espeak" in probe(capsys)


def test_not_ready_without_any_heartbeat_exits_1_with_one_line_on_stderr():
    # The real command line, as the kubelet runs it (local-memory cache: no worker can have announced itself).
    env = {key: value for key, value in os.environ.items() if key != "REDIS_URL"}
    done = subprocess.run(
        [sys.executable, "manage.py", "tts_worker_ready"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1
    reason = f"CommandError: no tts_worker on {socket.gethostname()} has a fresh heartbeat"
    assert done.stderr.strip().splitlines() == [reason]


def test_not_ready_when_no_engine_of_this_host_is_available(capsys, settings, tmp_path):
    settings.XTTS_MODEL_DIR = str(tmp_path)
    announce(["xtts"])
    message = probe_fails(capsys)
    assert "no available engine" in message and "xtts:" in message and "lacks model.pth" in message


def test_not_ready_when_only_workers_on_other_hosts_are_live(capsys):
    announce(["espeak"], host="tts-worker-other-pod")
    assert "no tts_worker on" in probe_fails(capsys)


def test_not_ready_when_the_heartbeat_is_stale(capsys, settings):
    settings.TTS_WORKER_DEAD_AFTER = 0.05
    announce(["espeak"])
    time.sleep(0.1)
    assert "fresh heartbeat" in probe_fails(capsys)


def test_not_ready_while_the_worker_is_still_loading_its_engines(capsys):
    # What a worker announces between starting and having loaded everything (ModelWorker.start_heartbeat).
    worker = ModelWorker(engine_names=["espeak", "xtts"], capacity=1)
    assert worker.describe()["engines"]["xtts"] == {"available": False, "loading": True, "reason": "loading"}
    heartbeats.worker_heartbeat(worker_id=worker.worker_id, info=worker.describe())
    message = probe_fails(capsys)
    assert "still loading" in message and "espeak, xtts" in message
