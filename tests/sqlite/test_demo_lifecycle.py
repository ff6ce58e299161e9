"""``manage.py demo`` as deploy/demo.sh runs it: it stops cleanly on SIGTERM and Ctrl-C, and a rerun is correct.

Each demo is a subprocess on the embedded default (SQLite under a temporary VAR_DIR, the filesystem
broker), with the web server and a Celery worker (with beat) of its own, so these tests are slow.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
USERS = 3  # simulated clients per (metric, day, region): 3 days x 6 regions x 3 = 54 reports of a metric
SEEDED = USERS * 3 * 6

pytestmark = pytest.mark.slow


def embedded_env(var_dir: Path) -> dict:
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return {**env, "VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "deploy.settings", "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1"}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _children(pid: int) -> dict[int, str]:
    """Every descendant of ``pid``: {pid: start time} (the start time tells a reused pid apart)."""
    parents: dict[int, list[int]] = {}
    started: dict[int, str] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
        started[int(entry.name)] = fields[19]
    found, stack = {}, list(parents.get(pid, []))
    while stack:
        child = stack.pop()
        found[child] = started[child]
        stack.extend(parents.get(child, []))
    return found


def _alive(pid: int, started: str) -> bool:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[19] == started and fields[0] != "Z"


class Demo:
    """One ``manage.py demo`` subprocess; its output is collected by a thread."""

    def __init__(self, var_dir: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "manage.py", "demo", "--port", str(_free_port()), "--users", str(USERS), *args],
            cwd=REPO, env=embedded_env(var_dir), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        self.lines: list[str] = []
        self.children: dict[int, str] = {}
        self._welcome = threading.Event()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            self.lines.append(line)
            if line.startswith("Stop with"):
                self._welcome.set()
        self._welcome.set()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_until_up(self) -> None:
        assert self._welcome.wait(240) and self.process.poll() is None, self.output[-4000:]

    def fed(self) -> dict[str, int]:
        return {name: int(n) for n, name in re.findall(r"^fed (\d+) randomized reports of (\w+)", self.output, re.M)}

    def printed_query(self, **changes) -> dict:
        """Run the query the demo printed (URL, token and body from its curl command), with ``changes`` to its body."""
        url = re.search(r"curl -s -X POST (\S+)", self.output).group(1)
        token = re.search(r"Authorization: Token (\w+)", self.output).group(1)
        body = {**json.loads(re.search(r"-d '(\{.*\})'", self.output).group(1)), **changes}
        request = urllib.request.Request(url, data=json.dumps(body).encode(), method="POST", headers={
            "Authorization": f"Token {token}", "Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=60) as response:
            return json.loads(response.read())

    def stop(self, signum: int) -> None:
        """Send ``signum`` to the demo alone and check that it and every process it started are gone."""
        deadline = time.monotonic() + 120
        while len(self.children) < 3 and time.monotonic() < deadline:  # the worker forks its pool and beat
            time.sleep(0.5)
            self.children = _children(self.process.pid)
        assert len(self.children) >= 3, self.children  # the web server, the worker and its pool/beat processes
        self.process.send_signal(signum)
        assert self.process.wait(timeout=120) == 0, self.output[-4000:]
        left = {pid for pid, started in self.children.items() if _alive(pid, started)}
        assert not left, f"still running after {signal.Signals(signum).name}: {left}"

    def kill(self) -> None:
        """SIGKILL the demo and whatever it started that is still running (also orphans of a failed stop)."""
        children = {**self.children, **(_children(self.process.pid) if self.process.poll() is None else {})}
        self.process.kill()
        self.process.wait()
        for pid, started in children.items():
            if _alive(pid, started):
                os.kill(pid, signal.SIGKILL)


@pytest.fixture
def demos(tmp_path):
    """Start demos on one VAR_DIR; whatever a failing test leaves running is killed."""
    started: list[Demo] = []

    def start(*args: str) -> Demo:
        demo = Demo(tmp_path / "var", *args)
        started.append(demo)
        return demo

    yield start
    for demo in started:
        demo.kill()


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=["SIGTERM", "Ctrl-C", "SIGHUP"])
def test_a_signal_stops_the_demo_and_every_process_it_started(demos, signum):
    demo = demos()
    demo.wait_until_up()
    demo.stop(signum)
    assert f"{signal.Signals(signum).name}: stopping the demo" in demo.output


def _seeded_reports(demo: Demo) -> int:
    """app_theme's reports over the printed query's window, by a query precise enough to tell 54 from 108.

    Ungrouped at ε = 9 (the rest of the analyst's daily 10): n is the sum of k = 20 noisy counts, each
    with discrete Laplace noise of scale 1/9 (sd under 0.16), so n has sd under 0.7; the tests allow 10.
    """
    return demo.printed_query(group_by=[], epsilon=9)["data"][0]["reports"]


def test_a_rerun_is_a_fresh_demo_and_keep_data_never_doubles_it(demos):
    first = demos()
    first.wait_until_up()
    assert first.fed() == {name: SEEDED for name in ("app_theme", "screen_size", "favorite_feature")}
    answer = first.printed_query()
    assert answer["privacy"]["cached"] is False and answer["privacy"]["budget_remaining"] == 9
    assert abs(_seeded_reports(first) - SEEDED) < 10
    first.stop(signal.SIGTERM)

    second = demos()  # a rerun starts over: the same data once, a new release, a full budget
    second.wait_until_up()
    assert "starting a fresh demo" in second.output
    assert second.fed() == first.fed()
    again = second.printed_query()
    assert again["privacy"]["cached"] is False and again["release"]["id"] != answer["release"]["id"]
    assert again["privacy"]["budget_remaining"] == 9
    assert abs(_seeded_reports(second) - SEEDED) < 10
    second.stop(signal.SIGTERM)

    kept = demos("--keep-data")  # keeps the database and seeds nothing that is already there
    kept.wait_until_up()
    assert "starting a fresh demo" not in kept.output
    assert kept.fed() == {name: 0 for name in ("app_theme", "screen_size", "favorite_feature")}
    cached = kept.printed_query()  # the same question on the same data: the released answer, free
    assert cached["privacy"]["cached"] is True and cached["release"]["id"] == again["release"]["id"]
    assert abs(_seeded_reports(kept) - SEEDED) < 10
    kept.stop(signal.SIGTERM)
