"""benchmarks/gpu_check.py on a machine without an NVIDIA GPU: one line, exit 0, nothing
installed (the GPU run itself is the script's job, not a test's)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.skips import machine_skip

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu_check.py"


def test_without_a_gpu_it_says_so_in_one_line_and_exits_0(tmp_path: Path) -> None:
    if shutil.which("nvidia-smi"):
        machine_skip("this machine has nvidia-smi: the script would run the real check")
    result = subprocess.run([sys.executable, str(SCRIPT), "--cache", str(tmp_path / "c")],
                            capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == [
        "gpu_check: no NVIDIA GPU here (nvidia-smi lists none); nothing to check"]
    assert result.stderr == "" and not (tmp_path / "c").exists()


def test_a_missing_clip_is_one_line_and_nothing_is_written(tmp_path: Path) -> None:
    """A mistyped --clip stops the check before any work, instead of a traceback at the end
    (or a synthesised clip written under the mistyped name)."""
    clip = tmp_path / "typo.mp4"
    result = subprocess.run([sys.executable, str(SCRIPT), "--rehearse", "--clip", str(clip),
                             "--cache", str(tmp_path / "c")], capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    assert result.stderr.splitlines() == [
        f"gpu_check: --clip {clip}: no such file; make one with --write-clip PATH"]
    assert result.stdout == "" and not clip.exists() and not (tmp_path / "c").exists()


def test_a_failing_row_is_one_line_and_the_next_rows_run(capsys) -> None:
    """A TensorRT build that raises must not take the torch rows with it."""
    import importlib.util

    loaded = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    gpu_check = importlib.util.module_from_spec(loaded)
    loaded.loader.exec_module(gpu_check)

    def build() -> None:
        raise RuntimeError("TensorRT failed to build an engine\nsecond line")

    assert gpu_check.row("TensorRT fp16 encoder", build) is None
    assert gpu_check.row("torch fp16 encoder", lambda x: x + 1, 1) == 2
    out = capsys.readouterr().out
    assert out.splitlines() == [f"  {'TensorRT fp16 encoder':<36} FAILED  RuntimeError: "
                                "TensorRT failed to build an engine"]


@pytest.mark.slow
def test_the_cpu_rehearsal_runs_every_step(tmp_path: Path) -> None:
    """`--rehearse`: the whole script on CPU backends and a tiny model, so that it is known to
    work before a GPU minute is spent on it (the numbers it prints are not the point here)."""
    result = subprocess.run([sys.executable, str(SCRIPT), "--rehearse", "--frames", "12",
                             "--cache", str(tmp_path / "c")], capture_output=True, text=True,
                            timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    for heading in ("encoder + edit+render: exported and built", "fp16 vs fp32",
                    "networks only, ms/frame", "FSE + edit + render E+R",
                    "goal      networks only", "transfer paste (E and R a frame)",
                    "vidinv edit, 1920×1080 clip of 12 frames", "paste=transfer",
                    "end to end as a user runs it", "parity ok"):
        assert heading in out, out
    assert "FAILED" not in out and "skipped" not in out, out
    assert out.count(" fps  (12 frames in ") == 6, out  # 4 in process, 2 `vidinv edit`

    # Without TensorRT (here: --no-tensorrt, ONNX Runtime's stand-in) its rows say so and the
    # rest runs, on a clip given with --clip (the model and the clip are reused from the cache).
    clip = tmp_path / "c" / "clip1080p_12.mp4"
    assert clip.is_file()
    result = subprocess.run([sys.executable, str(SCRIPT), "--rehearse", "--no-tensorrt",
                             "--clip", str(clip), "--cache", str(tmp_path / "c")],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    absent = [line for line in out.splitlines() if line.startswith("  ONNX Runtime")]
    assert absent and all("not used (--no-tensorrt" in line for line in absent), out
    assert "at the best batch on torch fp32" in out and out.count(" fps  (12 frames in ") == 3
