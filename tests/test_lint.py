"""The tree stays ruff-clean (the same check as `make lint`)."""

import shutil
import subprocess
import sys
from pathlib import Path

from .helpers import unavailable

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_is_clean() -> None:
    ruff = shutil.which("ruff") or str(Path(sys.executable).parent / "ruff")
    if not Path(ruff).exists():
        unavailable("ruff is not installed")
    done = subprocess.run([ruff, "check", "mlxrpc", "tests", "benchmarks", "clients"],
                          cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout
