"""A real service for tests that talk to it over TCP: migrate, bootstrap_demo and daphne on a free port, as
`make run` does."""
import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for_port(port: int, process: subprocess.Popen, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.1)
    process.kill()
    pytest.fail(f"daphne did not start on port {port}")


def start_server(data_dir: Path, *, server_args: tuple[str, ...] = (), **extra_env: str):
    """migrate, bootstrap_demo and daphne on a free port, as `make run` does (plus daphne's `server_args`, such as
    --access-log); yields {"port", "key"}."""
    env = {**os.environ, "DATA_DIR": str(data_dir), "DATABASE_URL": f"sqlite:///{data_dir / 'db.sqlite3'}", **extra_env}
    env.pop("DJANGO_SETTINGS_MODULE", None)
    if env.get("REDIS_URL"):
        # Its own Redis database: the test process flushes its cache between tests.
        env["REDIS_URL"] = urlsplit(env["REDIS_URL"])._replace(path="/14").geturl()
    manage = [sys.executable, str(ROOT / "manage.py")]
    subprocess.run([*manage, "migrate", "--noinput", "-v0"], env=env, check=True, cwd=ROOT)
    out = subprocess.run([*manage, "bootstrap_demo"], env=env, check=True, cwd=ROOT, capture_output=True, text=True)
    key = out.stdout.strip().rsplit(" ", 1)[-1]
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "callwaiting.server", "-b", "127.0.0.1", "-p", str(port), *server_args,
         "callwaiting.asgi:application"],
        env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=open(data_dir / "daphne.log", "w"),
    )
    wait_for_port(port, process)
    yield {"port": port, "key": key, "db": data_dir / "db.sqlite3"}
    process.terminate()
    process.wait(10)

