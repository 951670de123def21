"""The reference guides' examples (FastMLX, vllm-mlx) run unmodified against mlxrpc.

The code blocks are read from the guides in ``../shared/seeds`` (beside the
repository); only the server URL and the model names are replaced.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from .conftest import Stack

SEEDS = Path(os.environ.get("MLXRPC_SEEDS_DIR", Path(__file__).resolve().parents[2] / "shared" / "seeds"))


def guide_blocks(marker: str) -> list[tuple[str, str]]:
    for path in sorted(SEEDS.glob("*.txt")) if SEEDS.is_dir() else []:
        text = path.read_text()
        if marker in text:
            return re.findall(r"```(\w+)\n(.*?)```", text, re.S)
    pytest.skip(f"the {marker} guide is not in {SEEDS}")


def localize(code: str, stack: Stack) -> str:
    """Points an example at the test server and the test model."""
    code = code.replace("http://localhost:8000", stack.http_base)
    return re.sub(r"mlx-community/[\w.\-]+", "default", code)


def run_python(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_fastmlx_text_examples(stack: Stack) -> None:
    blocks = [code for lang, code in guide_blocks("FastMLX") if lang == "python" and '"image"' not in code]
    assert len(blocks) == 2, "expected the non-streaming and streaming language-model examples"
    unary, streaming = (localize(code, stack) for code in blocks)
    printed = run_python(unary)
    assert "chat.completion" in printed and "'content':" in printed
    printed = run_python(streaming)
    assert "Stream finished. ✅" in printed
    assert "Unexpected data structure" not in printed and "Failed to decode" not in printed


def test_vllm_mlx_openai_sdk_examples(stack: Stack) -> None:
    blocks = [code for lang, code in guide_blocks("vllm-mlx") if lang == "python"]
    plain = [code for code in blocks if "response_format" not in code]
    assert len(plain) == 2, "expected the chat and completions examples"
    script = localize("\n".join(plain), stack)
    script += "\nprint('COMPLETION', response.choices[0].text != None)\n"
    printed = run_python(script)
    assert "COMPLETION True" in printed


def test_vllm_mlx_curl_examples(stack: Stack) -> None:
    curls = [code for lang, code in guide_blocks("vllm-mlx") if lang == "bash"
             and code.startswith("curl") and "response_format" not in code]
    assert len(curls) == 2, "expected the chat and streaming curl examples"
    chat, streaming = (localize(code, stack) for code in curls)
    out = subprocess.run(["bash", "-c", chat], capture_output=True, text=True, timeout=60).stdout
    assert json.loads(out)["choices"][0]["message"]["content"]
    out = subprocess.run(["bash", "-c", streaming], capture_output=True, text=True, timeout=60).stdout
    events = [line for line in out.splitlines() if line]
    assert events[-1] == "data: [DONE]" and len(events) > 3
