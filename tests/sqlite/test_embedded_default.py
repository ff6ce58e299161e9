"""The embedded default (SQLite file, no Redis) that the README's demo runs on.

Each run is a fresh interpreter with none of the service's environment variables, VAR_DIR
in a temporary folder: so the SQLite branches run (the ORM ingest store, the roll-up and
query reads without PostgreSQL's binary paths, no advisory locks, the in-process limiter
and cache), and the shared PostgreSQL and Redis are never touched, nor needed.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SCENARIO = Path(__file__).with_name("embedded_scenario.py")


def embedded_env(var_dir: Path) -> dict:
    """Nothing the settings read but VAR_DIR: the first run on a laptop."""
    env = {name: os.environ[name] for name in ("PATH", "HOME", "LANG", "TMPDIR") if name in os.environ}
    return {**env, "VAR_DIR": str(var_dir), "DJANGO_SETTINGS_MODULE": "deploy.settings", "PYTHONPATH": str(REPO)}


def run_scenario(var_dir: Path, *args: str) -> dict:
    done = subprocess.run([sys.executable, str(SCENARIO), *args], cwd=REPO, env=embedded_env(var_dir),
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-4000:]
    return json.loads(done.stdout)


@pytest.fixture(scope="module")
def seen(tmp_path_factory) -> dict:
    """What the scenario (embedded_scenario.py) saw, run once for this module."""
    return run_scenario(tmp_path_factory.mktemp("var"))


def test_it_runs_on_a_sqlite_file_under_var_dir(seen):
    assert seen["vendor"] == "sqlite"
    assert seen["database"].endswith("db.sqlite3") and "postgres" not in seen["database"]
    assert seen["create_metrics"] == [201, 201]
    assert (seen["create_ingest_key"], seen["create_analyst"]) == (201, 201)


def test_batches_are_stored_through_the_orm_store(seen):
    # 36 k-RR reports and 26 OUE payloads, one client each (see embedded_scenario.py)
    assert seen["ingest"] == {"statuses": [200], "accepted": 62, "rows": 62}
    # over client-0's bound: answered as accepted (no participation oracle) and not stored
    assert [i["status"] for i in seen["limited"]["items"]] == ["accepted"]
    assert seen["replay"] == {"status": 200, "same": True, "rows_unchanged": True}
    assert seen["conflict"] == {"status": 409, "code": "batch_id_conflict", "rows_unchanged": True}
    assert seen["partly_invalid"] == {"status": 200, "rows_added": 1,
                                      "codes": ["value_out_of_domain", "invalid_payload_length", "accepted"]}


def test_the_rollup_counts_every_report_exactly(seen):
    assert seen["rollup"] == {"staged_before": 63, "staged_after": 0}  # folded into counts, then deleted
    assert seen["observed"]["color"] == {"DE": [20, [14, 6, 0]], "US": [12, [0, 9, 3]], "": [4, [0, 0, 4]]}
    # OUE supports: DE sends 10100, 00000, 11111, 01000 five times each
    assert seen["observed"]["bits"] == {"DE": [20, [10, 10, 10, 5, 5]], "US": [6, [0, 0, 0, 6, 6]],
                                        "FR": [1, [0, 0, 0, 0, 0]]}


def test_a_query_is_released_charged_once_and_then_cached(seen):
    query, again = seen["query"], seen["query_again"]
    assert query["status"] == 200, query["answer"]
    answer = query["answer"]
    assert answer["values"] == ["red", "green", "blue"]
    assert answer["privacy"]["differential_privacy"] is True and answer["privacy"]["cached"] is False
    assert float(answer["privacy"]["epsilon"]) == 1.0 and float(answer["privacy"]["budget_remaining"]) == 9.0
    cells = {cell["region"]: cell for cell in answer["data"]}
    # DE and US are shown only if their selection counts (scale 10) clear 39 (probability 0.07, 0.03), else
    # they are in "other"; a shown region's n carries 3 discrete Laplace draws of scale 10/9 (sd 2.7): 13 is 4.9 sd
    for region, sent in (("DE", 20), ("US", 12)):
        assert region not in cells or abs(cells[region]["reports"] - sent) < 13
    assert cells["other"]["reports"] >= 0
    for cell in answer["data"]:
        assert sum(cell["counts"]) == cell["reports"] and min(cell["counts"]) >= 0
    assert again["status"] == 200 and again["privacy"]["cached"] is True
    assert again["release_id"] == answer["release"]["id"]
    assert float(again["privacy"]["budget_remaining"]) == 9.0  # re-releasing is free
    bits = seen["bits_query"]
    assert bits["status"] == 200, bits["answer"]
    (cell,) = bits["answer"]["data"]
    # 27 reports; n is noised on its own at scale Δ/ε = (5 + 1)/2 = 3 (sd 4.2): 25 is 6 sd
    assert abs(cell["reports"] - 27) < 25 and sum(cell["counts"]) == cell["reports"]
    status, budget = seen["budget"]
    assert status == 200 and float(budget["spent_today"]) == 3.0 and float(budget["remaining"]) == 7.0


def test_releases_verify_from_the_api_and_the_command(seen):
    expected = {"status": 200, "noise_verified": True, "postprocessing_verified": True}
    assert seen["verify"] == {"color": expected, "bits": expected}
    assert "noise_verified=True" in seen["verify_command"] and "postprocessing_verified=True" in seen["verify_command"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_the_demo_seeds_through_the_sdk_over_http_and_answers_queries(tmp_path):
    """``manage.py demo`` as deploy/demo.sh runs it: Django's server and a Celery worker on the
    filesystem broker, simulated clients through the SDK over HTTP, then a query and its audit."""
    users = 3
    done = subprocess.run(
        [sys.executable, "manage.py", "demo", "--port", str(_free_port()), "--users", str(users), "--exit-after-seed"],
        cwd=REPO, env=embedded_env(tmp_path), capture_output=True, text=True, timeout=300,
    )
    assert done.returncode == 0, (done.stdout[-3000:], done.stderr[-3000:])
    fed = {name: int(n) for n, name in re.findall(r"^fed (\d+) randomized reports of (\w+)", done.stdout, re.M)}
    assert fed == {name: users * 3 * 6 for name in ("app_theme", "screen_size", "favorite_feature")}  # 3 days, 6 regions
    tokens = dict(re.findall(r"^\s+(analyst|admin) token:\s+(\S+)$", done.stdout, re.M))
    result = run_scenario(tmp_path, "query", tokens["analyst"], tokens["admin"])
    assert result["query"]["status"] == 200, result["query"]
    assert result["verify"] == {"status": 200, "noise_verified": True, "postprocessing_verified": True}
