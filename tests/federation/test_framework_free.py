"""The log's core is framework-free: the SDK imports it, so loading it must not load Django. Pure."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_core_modules_import_without_django():
    code = ("import json, sys; import federation.canonical, federation.signing, federation.transparency; "
            "from federation.transparency import verify_inclusion, verify_consistency; "
            "from federation.signing import verify_tree_head; "
            "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('django', 'rest_framework'))))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True,
                            env={"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)})
    assert json.loads(result.stdout) == []
