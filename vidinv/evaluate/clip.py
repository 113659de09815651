"""The benchmark on one video file (``vidinv bench clip FILE``): same metrics and outputs as
the RAVDESS run, with a single video."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from vidinv.errors import InputFileError
from vidinv.evaluate.run import BenchOptions, run_benchmark


def run_clip(path: str | Path, out: str | Path, options: BenchOptions,
             compare: str | None = None) -> list[tuple[str, dict[str, Any]]]:
    """Benchmark ``path`` under the variants of ``compare`` (None: one); see
    :func:`vidinv.evaluate.run.run_benchmark`."""
    path = Path(path)
    if not path.is_file():
        raise InputFileError(f"{path}: no such video file")
    from vidinv.video.reader import VideoReader

    VideoReader(path)  # a file that is no video is the user's mistake: one line, no metrics
    return run_benchmark([(path, {})], Path(out), options, compare)
