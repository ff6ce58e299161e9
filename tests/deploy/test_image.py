"""The container image (deploy/Dockerfile) holds what the installed package needs; no Docker is needed to check."""

import re
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def _copied_paths() -> set[str]:
    dockerfile = (ROOT / "deploy" / "Dockerfile").read_text()
    copied = set()
    for line in re.findall(r"^COPY (.+)$", dockerfile, flags=re.MULTILINE):
        copied.update(part.rstrip("/") for part in line.split()[:-1])  # every source; the last word is the target
    return copied


def test_the_image_copies_every_package_the_project_installs_and_its_build_files():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    packages = {pattern.rstrip("*") for pattern in project["tool"]["setuptools"]["packages"]["find"]["include"]}
    assert packages <= _copied_paths(), f"not copied into the image: {sorted(packages - _copied_paths())}"
    assert {"pyproject.toml", "setup.py", "manage.py"} <= _copied_paths()


def test_every_app_in_installed_apps_is_a_copied_package():
    from django.conf import settings

    ours = {app.split(".")[0] for app in settings.INSTALLED_APPS if (ROOT / app.split(".")[0]).is_dir()}
    assert ours <= _copied_paths()
