"""A plain ``pip install mlxrpc`` on Linux (MLX without its backend library).

The failure is simulated with a stand-in ``mlx`` package whose ``mlx.core``
raises the same ImportError the real bindings raise when ``libmlx.so`` (from
``mlx-cpu``/``mlx-cuda``) is absent.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from mlxrpc.backend import advice, has_nvidia_gpu
from mlxrpc.sidecars import READY

LIBMLX_ERROR = "libmlx.so: cannot open shared object file: No such file or directory"


@pytest.fixture(scope="module")
def plain_env(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """An environment whose ``import mlx.core`` fails like a plain Linux install."""
    root = tmp_path_factory.mktemp("plain-mlx")
    (root / "mlx").mkdir()
    (root / "mlx" / "__init__.py").write_text("")
    (root / "mlx" / "core.py").write_text(f"raise ImportError({LIBMLX_ERROR!r})\n")
    return {**os.environ, "PYTHONPATH": str(root), "MLXRPC_BLAS": "bundled"}


def expected_install() -> str:
    return 'pip install "mlxrpc[cuda]"' if has_nvidia_gpu() else 'pip install "mlxrpc[cpu]"'


@pytest.mark.parametrize("command", [
    [sys.executable, "-m", "mlxrpc", "serve"],
    [str(Path(sys.executable).with_name("mlxrpc")), "serve", "--model", "x", "--no-http"],
])
def test_serve_names_the_extra_and_exits_non_zero(plain_env: dict[str, str], command: list[str]) -> None:
    done = subprocess.run(command, env=plain_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "Traceback" not in done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert LIBMLX_ERROR in lines[0]
    assert expected_install() in lines[0]


def test_generate_needs_no_mlx(plain_env: dict[str, str]) -> None:
    done = subprocess.run([sys.executable, "-m", "mlxrpc", "generate", "hi", "--target", "127.0.0.1:1"],
                          env=plain_env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1
    assert "UNAVAILABLE" in done.stderr
    assert "MLX cannot load" not in done.stderr


def test_gateway_needs_no_mlx(plain_env: dict[str, str]) -> None:
    process = subprocess.Popen(
        [sys.executable, "-m", "mlxrpc", "gateway", "--upstream", "127.0.0.1:1", "--host", "127.0.0.1",
         "--http-port", "0", "--workers", "1"],
        env=plain_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        assert process.stdout.readline().startswith(READY)
    finally:
        process.send_signal(signal.SIGTERM)
        _, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    assert "MLX cannot load" not in err


def test_advice_per_platform() -> None:
    error = ImportError(LIBMLX_ERROR)
    cpu = advice(error, "linux", nvidia=False)
    assert 'pip install "mlxrpc[cpu]"' in cpu and LIBMLX_ERROR in cpu
    cuda = advice(error, "linux", nvidia=True)
    assert 'pip install "mlxrpc[cuda]"' in cuda and "[cpu]" not in cuda
    mac = advice(ModuleNotFoundError("No module named 'mlx'"), "darwin", nvidia=False)
    assert "pip install --force-reinstall mlx" in mac and "[cpu]" not in mac
    assert "Linux only" in advice(error, "win32", nvidia=False)
