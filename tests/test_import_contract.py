"""The layers' import contract (ARCHITECTURE.md): imports only go down.

``privacy/`` (pure) < ``deploy/api/`` (shared API plumbing) < ``accounting/`` (the ledger)
< ``telemetry/``, ``federation/`` < ``frontend/``. Checked statically, over every import
statement of every module (inside functions and ``TYPE_CHECKING`` blocks too), and for
the framework-free parts also dynamically: importing them in a fresh interpreter loads no
Django. Pure: needs no database.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
APPS = ("accounting", "telemetry", "federation", "frontend")
DJANGO = ("django", "rest_framework")


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(REPO).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(source: str, module: str, is_package: bool) -> list[tuple[str, int]]:
    """(imported module, line) for every import statement in ``source``, relative ones made absolute."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module
            found.append((target, node.lineno))
            # ``from package import module`` imports the submodule too
            found += [(f"{target}.{alias.name}", node.lineno) for alias in node.names if alias.name != "*"]
    return found


def _modules(*paths: str) -> list[Path]:
    files = []
    for relative in paths:
        path = REPO / relative
        files += sorted(path.rglob("*.py")) if path.is_dir() else [path]
    assert files, f"no modules under {paths}"  # a rule over nothing would pass vacuously
    return files


def _is_under(name: str, roots) -> bool:
    return any(name == root or name.startswith(root + ".") for root in roots)


def violations(paths, forbidden, allowed=()) -> list[str]:
    """``path:line imports name`` for every import of a module under ``forbidden`` and not under ``allowed``."""
    found = []
    for path in _modules(*paths):
        for name, line in imports_of(path.read_text(), _module_name(path), path.name == "__init__.py"):
            if _is_under(name, forbidden) and not _is_under(name, allowed):
                found.append(f"{path.relative_to(REPO)}:{line} imports {name}")
    return sorted(set(found))


# --- the rules ------------------------------------------------------------------------------------


def test_privacy_imports_no_django_no_app_and_nothing_from_deploy():
    assert violations(["privacy"], DJANGO + APPS + ("deploy",)) == []


def test_the_sdk_imports_no_django_and_nothing_of_the_server():
    """The Python SDK runs on clients: it may use privacy/ and itself, nothing of the service."""
    forbidden = DJANGO + APPS + ("deploy", "celery")
    assert violations(["telemetry/sdk"], forbidden, allowed=("telemetry.sdk",)) == []


PURE_ACCOUNTING = ("accounting.accountants", "accounting.calibration", "accounting.events", "accounting.types")


def test_the_accountants_and_events_import_no_django_and_no_app():
    forbidden = DJANGO + APPS + ("deploy",)
    paths = [name.replace(".", "/") + ".py" for name in PURE_ACCOUNTING]
    assert violations(paths, forbidden, allowed=PURE_ACCOUNTING) == []


def test_accounting_imports_no_other_app():
    assert violations(["accounting"], tuple(app for app in APPS if app != "accounting")) == []


def test_nothing_imports_the_pages():
    """frontend/ is the top layer: no app and no API plumbing imports it (deploy/urls.py names it as a string)."""
    assert violations(["privacy", "deploy", "accounting", "telemetry", "federation"], ("frontend",)) == []


def test_deploy_api_imports_no_app():
    assert violations(["deploy/api"], APPS) == []


# --- the framework-free parts load no Django at run time ------------------------------------------


def test_importing_the_framework_free_parts_loads_no_django():
    """Every module of privacy/ and telemetry/sdk/, and accounting.accountants, imported in a fresh
    interpreter with no Django settings: none of them pulls Django in, directly or through another."""
    names = sorted({_module_name(path) for path in _modules("privacy", "telemetry/sdk")} | set(PURE_ACCOUNTING))
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}  # no DJANGO_SETTINGS_MODULE, no service URLs
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    loaded = json.loads(done.stdout)
    assert set(names) <= set(loaded)
    assert [m for m in loaded if _is_under(m, DJANGO + ("deploy", "celery"))] == []
    server_side = [m for m in loaded if _is_under(m, APPS)
                   and not _is_under(m, ("telemetry.sdk", *PURE_ACCOUNTING))
                   and m not in ("telemetry", "accounting")]  # the packages' __init__, both empty
    assert server_side == []


def test_torch_is_imported_only_by_the_dpsgd_engine():
    """torch is the optional ``[train]`` extra: only privacy/dpsgd/ may import it, statically..."""
    everything = ["privacy", "deploy", *[app for app in APPS if (REPO / app).is_dir()]]
    found = violations(everything, ("torch",))
    assert [v for v in found if not v.startswith("privacy/dpsgd/")] == []
    assert any(v.startswith("privacy/dpsgd/engine.py") for v in found)  # the rule sees the engine's import


def test_the_service_loads_without_torch_at_run_time():
    """...and dynamically: ``privacy``, its other modules, the dataset readers and the pure accounting
    (calibration included) load no torch in a fresh interpreter."""
    names = sorted({_module_name(path) for path in _modules("privacy")
                    if not _is_under(_module_name(path), ("privacy.dpsgd",))}
                   | {"privacy.dpsgd", "privacy.dpsgd.datasets"} | set(PURE_ACCOUNTING))
    script = (
        "import importlib, json, sys\n"
        f"for name in {names!r}:\n"
        "    importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert [m for m in json.loads(done.stdout) if _is_under(m, ("torch",))] == []


# --- the checker itself ---------------------------------------------------------------------------


@pytest.mark.parametrize("source, module, is_package, expected", [
    ("import django.db", "privacy.noise", False, [("django.db", 1)]),
    ("from ..catalog import catalog", "telemetry.sdk.client", False,
     [("telemetry.catalog", 1), ("telemetry.catalog.catalog", 1)]),
    ("from . import base", "privacy.ldp", True, [("privacy.ldp", 1), ("privacy.ldp.base", 1)]),
    ("def f():\n    from telemetry import models\n", "accounting.views", False,
     [("telemetry", 2), ("telemetry.models", 2)]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import rest_framework\n", "accounting.x", False,
     [("typing", 1), ("typing.TYPE_CHECKING", 1), ("rest_framework", 3)]),
])
def test_the_checker_finds_every_kind_of_import(source, module, is_package, expected):
    assert sorted(imports_of(source, module, is_package)) == sorted(expected)


def test_the_checker_reports_a_violation(tmp_path, monkeypatch):
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "mod.py").write_text("import os\n\ndef late():\n    from django.conf import settings\n")
    monkeypatch.setattr(sys.modules[__name__], "REPO", tmp_path)
    assert violations(["pkg"], DJANGO) == ["pkg/mod.py:4 imports django.conf",
                                           "pkg/mod.py:4 imports django.conf.settings"]
    assert violations(["pkg"], ("telemetry",)) == []
