"""benchmarks/gpu_check.py on a machine without an NVIDIA GPU: one line, exit 0, nothing
installed (the GPU run itself is the script's job, not a test's)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        pytest.skip("this machine has nvidia-smi: the script would run the real check")
    result = subprocess.run([sys.executable, str(SCRIPT), "--cache", str(tmp_path / "c")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "gpu_check: no NVIDIA GPU here (nvidia-smi lists none); nothing to check"]
    assert result.stderr == "" and not (tmp_path / "c").exists()
