"""Writing benchmark results: CSV (atomically), the per-frame plot, the table. JSON (with ∞
written as ``"inf"``) is :func:`vidinv.io_safety.write_json`."""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from vidinv.io_safety import write_atomically

#: Table 2 of the FSE paper (003), then the temporal columns: (key, header, format).
TABLE_COLUMNS = (
    ("crop_ssim", "SSIM ↑", "{:.3f}"),
    ("crop_psnr", "PSNR ↑", "{:.2f}"),
    ("crop_mse", "MSE ↓", "{:.4f}"),
    ("lpips", "LPIPS ↓", "{:.3f}"),
    ("id_distance", "ID dist ↓", "{:.3f}"),
    ("id_same", "same ↑", "{:.0%}"),
    ("tl_id", "TL-ID ↑", "{:.3f}"),
    ("tg_id", "TG-ID ↑", "{:.3f}"),
    ("warp_error_face", "warp ↓", "{:.4f}"),
    ("crop_jitter", "crop jit ↓", "{:.2f}"),
    ("latent_jitter", "lat jit ↓", "{:.2f}"),
)
FRAME_TABLE_COLUMNS = (
    ("frame_ssim", "SSIM ↑", "{:.3f}"),
    ("frame_psnr", "PSNR ↑", "{:.2f}"),
    ("frame_mse", "MSE ↓", "{:.5f}"),
    ("warp_error", "warp ↓", "{:.4f}"),
    ("warp_error_source", "warp src", "{:.4f}"),
    ("warp_error_face_source", "warp face src", "{:.4f}"),
    ("landmark_jitter", "lmk jit", "{:.2f}"),
)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, float):
        return "inf" if math.isinf(value) else f"{value:.6g}"
    return str(value)


def write_csv(path: Path, rows: Iterable[Mapping[str, Any]], columns: Sequence[str]) -> None:
    """Rows as CSV with ``columns`` (missing or None values are empty cells), atomically."""
    import io

    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(columns)
    for row in rows:
        writer.writerow([_cell(row.get(name)) for name in columns])
    write_atomically(path, buffer.getvalue())


def plot_per_frame(path: Path, videos: Mapping[str, Sequence[Mapping[str, Any]]],
                   title: str) -> None:
    """PNG: crop PSNR, crop SSIM and ID distance over the frame index, one line per video
    (with dlib's same-person line at 0.6).

    Uses matplotlib's object API with the Agg canvas (no pyplot, no global backend change);
    infinite PSNRs are left out of the line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    from vidinv.metrics.identity import SAME_PERSON_DISTANCE

    figure = Figure(figsize=(10, 8), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.subplots(3, 1, sharex=True)
    panels = (("crop_psnr", "PSNR (dB) ↑"), ("crop_ssim", "SSIM ↑"),
              ("id_distance", "ID distance ↓"))
    for axis, (key, label) in zip(axes, panels, strict=True):
        for name, rows in videos.items():
            xs = [r["frame"] for r in rows if r.get(key) is not None
                  and math.isfinite(float(r[key]))]
            ys = [float(r[key]) for r in rows if r.get(key) is not None
                  and math.isfinite(float(r[key]))]
            axis.plot(xs, ys, linewidth=0.8, label=name)
        if key == "id_distance":
            axis.axhline(SAME_PERSON_DISTANCE, color="grey", linestyle="--", linewidth=0.8,
                         label="same-person line")
        axis.set_ylabel(label)
        axis.grid(True, alpha=0.3)
    axes[-1].set_xlabel("frame")
    axes[0].set_title(title, fontsize=10)
    if 0 < len(videos) <= 12:
        axes[0].legend(fontsize=7, loc="best")
    from vidinv.io_safety import replacing

    with replacing(path, ".png") as tmp:
        figure.savefig(tmp, format="png")


def _format(value: Any, spec: str) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float) and math.isinf(value):
        return "inf"
    return spec.format(value)


def format_table(rows: Sequence[tuple[str, Mapping[str, Any]]],
                 columns: Sequence[tuple[str, str, str]] = TABLE_COLUMNS,
                 first: str = "Method") -> str:
    """A plain-text table: one row per (name, values), the given columns, "n/a" for None."""
    header = [first, *(title for _, title, _ in columns)]
    body = [[name, *(_format(values.get(key), spec) for key, _, spec in columns)]
            for name, values in rows]
    widths = [max(len(line[i]) for line in [header, *body]) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        first_cell = cells[0].ljust(widths[0])
        rest = (cell.rjust(width) for cell, width in zip(cells[1:], widths[1:], strict=True))
        return "  ".join([first_cell, *rest])

    rule = "-" * len(line(header))
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])
