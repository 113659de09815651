"""The wheel ships what a normal install needs: built from the sources, installed (not editable)
into a fresh virtual environment, run from a folder outside the checkout.

The fresh venv gets the wheel with ``--no-deps``; its dependencies (torch, PyAV, MediaPipe,
ONNX Runtime — gigabytes, and no network here) come from this interpreter's site-packages through
a ``.pth`` path line placed *after* the venv's own site-packages. A path line does not run the
``.pth`` files it points at, so this checkout's editable install is not activated and the
``vidinv`` that runs is the wheel's (the test checks ``vidinv.__file__``).
"""

from __future__ import annotations

import ast
import os
import shutil
import site
import subprocess
import sys
import zipfile
from pathlib import Path

import av
import pytest

from tests.media import real_clip_path

ROOT = Path(__file__).resolve().parents[1]


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    result = subprocess.run(command, capture_output=True, text=True, timeout=600, **kwargs)
    assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
    return result


def test_top_level_presets_and_specs_are_the_packaged_ones() -> None:
    for folder, pattern in (("pipelines", "*.toml"), ("engines", "*.toml")):
        top = {p.name: p.read_bytes() for p in (ROOT / folder).glob(pattern)}
        packaged = {p.name: p.read_bytes()
                    for p in (ROOT / "vidinv" / "assets" / folder).glob(pattern)}
        assert top and top == packaged, f"{folder}/ and vidinv/assets/{folder}/ differ"


def test_benchmarks_import_no_test_code() -> None:
    """The benchmarks run from an installed vidinv (no tests/ folder beside it)."""
    offenders = []
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        for node in ast.walk(ast.parse(script.read_text(), str(script))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{script.name}:{node.lineno} imports {name}" for name in names
                          if name == "tests" or name.startswith("tests.")]
    assert not offenders, offenders


@pytest.mark.slow
def test_wheel_installs_and_edits_with_the_realtime_preset_outside_the_checkout(
        tmp_path: Path) -> None:
    # Build from a copy, so the build leaves no build/ or egg-info in the checkout.
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "vidinv", source / "vidinv",
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
          "--no-index", "-q", "-w", str(dist), str(source)])
    (wheel,) = dist.glob("vidinv-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for shipped in ("vidinv/assets/pipelines/realtime.toml",
                    "vidinv/assets/pipelines/offline_hq.toml",
                    "vidinv/assets/engines/generator.toml",
                    "vidinv/assets/default_model/generator.safetensors",
                    "vidinv/assets/face_mesh_mirror.txt"):
        assert shipped in names, shipped

    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", "--without-pip", str(venv)])
    python = venv / "bin" / "python"
    _run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
          "--no-index", "-q", str(wheel)])
    (venv_site,) = (venv / "lib").glob("python3*/site-packages")
    (venv_site / "zz_dependencies.pth").write_text(
        "\n".join(site.getsitepackages()) + "\n")

    outside = tmp_path / "elsewhere"
    outside.mkdir()
    env = {key: value for key, value in os.environ.items() if key != "PYTHONPATH"}
    env["VIDINV_CACHE"] = str(tmp_path / "cache")
    where = _run([str(python), "-c", "import vidinv; print(vidinv.__file__)"], cwd=outside,
                 env=env).stdout.strip()
    assert Path(where).is_relative_to(venv_site), where

    clip = outside / "clip.mp4"
    with av.open(str(real_clip_path())) as src, av.open(str(clip), "w") as dst:
        stream = src.streams.video[0]
        out = dst.add_stream("libx264", rate=stream.average_rate)
        out.width, out.height, out.pix_fmt = stream.width, stream.height, "yuv420p"
        for index, frame in enumerate(src.decode(stream)):
            if index == 10:
                break
            for packet in out.encode(frame.reformat(format="yuv420p")):
                dst.mux(packet)
        for packet in out.encode():
            dst.mux(packet)

    result = _run([str(venv / "bin" / "vidinv"), "edit", "clip.mp4", "--attr", "smile",
                   "--preset", "realtime", "--backend", "onnx", "-o", "edited.mp4", "--quiet"],
                  cwd=outside, env=env)
    print(result.stdout.strip())
    assert result.stdout.startswith("wrote edited.mp4: 10 frames")
    with av.open(str(outside / "edited.mp4")) as container:
        assert sum(1 for _ in container.decode(video=0)) == 10
    assert list((tmp_path / "cache" / "engines").glob("*/encoder.*.onnx"))
