"""Running the benchmark: videos × settings variants → per-video and aggregate results.

Layout of the output folder::

    OUT/
      table.txt                      the printed tables (rows = variants)
      comparison.json / .csv         the variants' aggregates side by side
      <variant>/
        videos/<stem>.json           one video's summary and settings (written last: the
                                     "finished" marker that a resumed run skips)
        videos/<stem>.csv            its per-frame metrics
        summary.json / summary.csv   per-video rows, then the mean over videos
        per_frame.png                PSNR, SSIM and ID over frames, one line per video

A variant is a set of pipeline overrides (``--set`` syntax) and has a name derived from its
smoothing and batch size (e.g. ``smooth-centred_batch-4``), so a plain run and a comparison
share results. A finished per-video JSON is reused when its settings (model fingerprint,
overrides, edit, frame cap, metric models) equal the current ones; otherwise it is recomputed.

Aggregates are means over videos of the per-video means (each video weighs the same); videos
that failed (no face, unreadable) are counted and left out.
"""

from __future__ import annotations

import logging
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vidinv.errors import VidinvError
from vidinv.metrics.identity import EMBEDDING_NAME

log = logging.getLogger(__name__)

#: Bump when a metric's definition changes: older per-video results are then recomputed.
BENCH_VERSION = 2  # 2: ID on dlib's distance scale (id_distance, id_same; TL/TG-ID on s)

SUMMARY_KEYS = (
    "crop_ssim", "crop_psnr", "crop_psnr_inf_frames", "crop_psnr_of_mean_mse", "crop_mse",
    "crop_mse_pm1", "lpips", "id_distance", "id_same", "id_similarity", "id_cosine", "tl_id",
    "tg_id", "tl_id_cosine", "tg_id_cosine", "frame_ssim", "frame_psnr",
    "frame_psnr_inf_frames", "frame_mse", "warp_error", "warp_error_source", "warp_error_face",
    "warp_error_face_source", "crop_jitter", "landmark_jitter", "latent_jitter", "frames",
    "face_frames", "id_frames", "seconds", "fps",
)


@dataclass(frozen=True)
class Variant:
    """Pipeline settings under test: a name and ``section.field=value`` overrides."""

    name: str
    overrides: tuple[str, ...] = ()


@dataclass
class BenchOptions:
    """What every video of a run shares."""

    model: str | None = None
    preset: str | None = None
    overrides: tuple[str, ...] = ()
    edit: str | None = None
    strength: float = 1.0
    max_frames: int | None = None
    lpips_backbone: str | None = None
    lpips_lin: str | None = None
    lpips_size: int = 256
    warp_max_side: int = 320
    identity: bool = True
    keep_videos: bool = False
    progress: bool = True
    echo: Callable[[str], None] = print
    extra_settings: dict[str, Any] = field(default_factory=dict)
    #: None: the videos one after another in this process; else a Ray address (``local``,
    #: ``auto``, ``ray://HOST:PORT``) for :class:`vidinv.batch.executor.RayExecutor`.
    ray: str | None = None
    workers: int | None = None
    gpus_per_task: float = 0.0


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "-", text).strip("-")


def variant_name(config, edit: str | None = None, strength: float = 1.0) -> str:
    """``smooth-<mode>_batch-<B>[_edit-<attr><±strength>]`` for a PipelineConfig."""
    crop, latent = config.face.crop_smoothing, config.latent.smoothing
    smooth = crop if crop == latent else f"{crop}+{latent}"
    name = f"smooth-{smooth}_batch-{config.engine.batch_size}"
    if edit:
        name += f"_edit-{_slug(Path(edit).stem)}{strength:+g}"
    return name


def base_config(options: BenchOptions):
    """The PipelineConfig every variant starts from: preset, user overrides, a fast x264
    preset for the (temporary) output file, whose encoding the metrics never see, no
    side-by-side output (the output frame must be comparable with the input frame), and
    unless an override says otherwise no key frames (the crop metrics score the model's
    rendering of every frame; ``--set face.key_frames=true`` scores the output users get)."""
    from vidinv.config import PipelineConfig, load_preset

    config = load_preset(options.preset) if options.preset else PipelineConfig()
    return config.with_overrides(["output.preset=ultrafast", "face.key_frames=false",
                                  *options.overrides, "output.side_by_side=false"])


def make_variants(options: BenchOptions, compare: str | None) -> list[tuple[Variant, Any]]:
    """(Variant, PipelineConfig) pairs: one for a plain run, two for ``compare``.

    ``smoothing``: crop and latent smoothing off vs on (on = the base config's mode, or
    ``centred`` where that is ``none``). ``batching``: batch size 1 vs the base config's batch
    size (4 where that is 1).
    """
    base = base_config(options)
    if compare is None:
        sets: list[list[str]] = [[]]
    elif compare == "smoothing":
        mode = base.latent.smoothing if base.latent.smoothing != "none" else "centred"
        crop_mode = base.face.crop_smoothing if base.face.crop_smoothing != "none" else mode
        sets = [["face.crop_smoothing=none", "latent.smoothing=none"],
                [f"face.crop_smoothing={crop_mode}", f"latent.smoothing={mode}"]]
    elif compare == "batching":
        batch = base.engine.batch_size if base.engine.batch_size > 1 else 4
        sets = [["engine.batch_size=1"], [f"engine.batch_size={batch}"]]
    else:
        raise VidinvError(f"unknown comparison {compare!r}; use smoothing or batching")
    pairs = []
    for extra in sets:
        config = base.with_overrides(extra)
        name = variant_name(config, options.edit, options.strength)
        pairs.append((Variant(name, (*options.overrides, *extra)), config))
    return pairs


@dataclass
class _Kit:
    """What the videos of a run share once loaded: model, metric models, settings."""

    bundle: Any
    embedder: Any
    lpips: Any
    fingerprint: str


def _load_kit(options: BenchOptions) -> _Kit:
    from vidinv.metrics.identity import IdentityEmbedder
    from vidinv.metrics.lpips import lpips_from_paths
    from vidinv.models.folder import load_model_bundle, resolve_model_folder

    lpips = lpips_from_paths(options.lpips_backbone, options.lpips_lin, options.lpips_size)
    bundle = load_model_bundle(resolve_model_folder(options.model))
    embedder = IdentityEmbedder() if options.identity else None
    return _Kit(bundle=bundle, embedder=embedder, lpips=lpips, fingerprint=bundle.fingerprint())


def _settings(kit: _Kit, options: BenchOptions, variant: Variant, config) -> dict[str, Any]:
    import dataclasses

    return {
        "bench_version": BENCH_VERSION,
        "model_folder": str(kit.bundle.folder),
        "model_fingerprint": kit.fingerprint,
        "generator_resolution": kit.bundle.generator.resolution,
        "crop_size": kit.bundle.crop_size,
        "variant": variant.name,
        "pipeline": dataclasses.asdict(config),
        "edit": options.edit,
        "strength": options.strength if options.edit else None,
        "max_frames": options.max_frames,
        "identity_embedding": EMBEDDING_NAME if kit.embedder is not None else None,
        "lpips": kit.lpips.name if kit.lpips is not None else None,
        "warp_max_side": options.warp_max_side,
        **options.extra_settings,
    }


def trim_video(source: Path, target: Path, max_frames: int) -> Path:
    """The first ``max_frames`` frames of ``source`` re-encoded losslessly (x264 crf 0) into
    ``target``, without audio (the FSE video script also keeps the first 120 frames)."""
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    reader = VideoReader(source)
    with VideoWriter(target, reader.info, crf=0, preset="ultrafast") as writer:
        for frame in reader:
            if frame.index >= max_frames:
                break
            writer.write(frame)
    return target


def run_video(path: Path, folder: Path, kit: _Kit, variant: Variant, config, editor,
              options: BenchOptions, meta: dict[str, Any] | None = None) -> dict[str, Any]:
    """One video under one variant: its record (from ``folder/videos/<stem>.json`` if that
    is finished with the same settings, else computed and written)."""
    from vidinv.evaluate.collect import FRAME_COLUMNS, MetricsCollector
    from vidinv.evaluate.report import write_csv
    from vidinv.face.errors import NoFaceError
    from vidinv.io_safety import read_json, write_json
    from vidinv.pipeline.clip import process_video
    from vidinv.video.errors import VideoInputError

    settings = _settings(kit, options, variant, config)
    stem = path.stem
    json_path = folder / "videos" / f"{stem}.json"
    if json_path.is_file():
        try:
            previous = read_json(json_path)
        except ValueError:
            previous = {}
        if previous.get("settings") == read_json_roundtrip(settings):
            previous["resumed"] = True
            return previous
        log.info("%s: settings changed since the last run; recomputing", json_path)
    record: dict[str, Any] = {"video": str(path), "name": stem, "settings": settings,
                              **(meta or {})}
    collector = MetricsCollector(kit.embedder, kit.lpips, options.warp_max_side)
    with tempfile.TemporaryDirectory(prefix="vidinv-bench-") as tmp:
        source = path
        output = (folder / "videos" / f"{stem}.mp4" if options.keep_videos
                  else Path(tmp) / f"{stem}_out.mp4")
        output.parent.mkdir(parents=True, exist_ok=True)
        try:
            if options.max_frames:
                source = trim_video(path, Path(tmp) / f"{stem}.mp4", options.max_frames)
            stats = process_video(source, output, kit.bundle, config, editor,
                                  progress=options.progress, on_frame=collector)
        except (NoFaceError, VideoInputError) as error:  # this video's fault: record, go on
            record.update(status="failed", error=str(error))
            write_json(json_path, record)
            return record
    summary = collector.summary()
    summary["fps"] = stats.frames / summary["seconds"] if summary["seconds"] > 0 else None
    record.update(status="ok", summary=summary)
    write_csv(folder / "videos" / f"{stem}.csv", collector.rows, FRAME_COLUMNS)
    write_json(json_path, record)
    return record


def read_json_roundtrip(data: dict[str, Any]) -> dict[str, Any]:
    """``data`` as it reads back from JSON (tuples become lists, ∞ stays ∞)."""
    import json

    from vidinv.io_safety import from_jsonable, to_jsonable

    return from_jsonable(json.loads(json.dumps(to_jsonable(data))))


def aggregate(records: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Mean over the finished videos of each summary value (None values left out)."""
    import math

    from vidinv.metrics.image import mean_or_none

    ok = [r for r in records if r.get("status") == "ok"]
    result: dict[str, Any] = {"videos": len(ok), "failed": len(records) - len(ok)}
    for key in SUMMARY_KEYS:
        values = [r["summary"].get(key) for r in ok]
        if key.endswith("_psnr"):
            finite = [v for v in values if v is not None and math.isfinite(v)]
            infinite = sum(1 for v in values if v is not None and not math.isfinite(v))
            result[key] = mean_or_none(finite) if finite else (math.inf if infinite else None)
            result[f"{key}_inf_videos"] = infinite
        elif key.endswith("_inf_frames") or key in ("frames", "face_frames", "id_frames"):
            result[key] = int(sum(v or 0 for v in values))
        else:
            result[key] = mean_or_none(values)
    return result


@dataclass(frozen=True)
class BenchJob:
    """The benchmark as a :class:`vidinv.batch.worker.Job`: a task is one video under one
    variant (``task.extra`` = (Variant, PipelineConfig, variant folder)); a worker loads the
    model, metric models and editor once (:func:`_load_kit`)."""

    options: BenchOptions

    def load(self) -> tuple[_Kit, Any]:
        kit = _load_kit(self.options)
        return kit, _editor(kit, self.options)

    def run(self, kit: tuple[_Kit, Any], task) -> dict[str, Any]:
        loaded, editor = kit
        variant, config, folder = task.extra
        record = run_video(task.input, folder, loaded, variant, config, editor, self.options,
                           task.meta)
        summary = record.get("summary") or {}
        status = record.get("status")
        if record.get("resumed") and status == "ok":
            status = "skipped"
        return {"name": task.name, "input": str(task.input), "output": str(task.output),
                "status": status, "error": record.get("error"),
                "seconds": summary.get("seconds"), "frames": summary.get("frames"),
                "fps": summary.get("fps"), "bench": record}


def _editor(kit: _Kit, options: BenchOptions):
    if not options.edit:
        return None
    from vidinv.pipeline.attributes import resolve_editor

    return resolve_editor(kit.bundle, options.edit, options.strength)


def _bench_record(record: dict[str, Any], path: Path) -> dict[str, Any]:
    """The per-video benchmark record inside a batch record (a video whose task failed
    outside :func:`run_video` gets a failed one)."""
    if record.get("bench") is not None:
        return record["bench"]
    return {"video": str(path), "name": path.stem, "status": "failed",
            "error": record.get("error")}


def summarise_variant(records: Sequence[dict[str, Any]], out: Path, kit: _Kit,
                      variant: Variant) -> dict[str, Any]:
    """One variant's per-video records → its summary files and plot; returns the aggregate."""
    from vidinv.evaluate.report import plot_per_frame, write_csv
    from vidinv.io_safety import write_json

    folder = out / variant.name
    summary = aggregate(records)
    rows = [{"video": r["name"], "status": r.get("status"), **(r.get("summary") or {})}
            for r in records]
    columns = ["video", "status", *SUMMARY_KEYS]
    write_csv(folder / "summary.csv", [*rows, {"video": "mean", **summary}], columns)
    write_json(folder / "summary.json", {"variant": variant.name,
                                         "overrides": list(variant.overrides),
                                         "aggregate": summary, "videos": rows,
                                         "conventions": CONVENTIONS,
                                         "identity_embedding": EMBEDDING_NAME,
                                         "lpips": kit.lpips.name if kit.lpips else "n/a"})
    per_frame = {}
    for record in records:
        csv_path = folder / "videos" / f"{record['name']}.csv"
        if record.get("status") == "ok" and csv_path.is_file():
            per_frame[record["name"]] = _read_frame_csv(csv_path)
    if per_frame:
        plot_per_frame(folder / "per_frame.png", per_frame,
                       f"{variant.name}: per-frame crop metrics "
                       f"(ID: {EMBEDDING_NAME}, distance; < 0.6 same person)")
    return summary


def _read_frame_csv(path: Path) -> list[dict[str, Any]]:
    import csv

    rows = []
    with path.open(newline="", encoding="utf-8") as handle:
        for raw in csv.DictReader(handle):
            row: dict[str, Any] = {}
            for key, text in raw.items():
                if text in ("", None):
                    row[key] = None
                elif key in ("face", "id_same"):
                    row[key] = text == "True"
                else:
                    row[key] = float(text)
            rows.append(row)
    return rows


def _progress_line(record: dict[str, Any]) -> str:
    """One finished task of the batch runner: ``variant/name: numbers``."""
    bench = record.get("bench") or {}
    head = f"{record['name']}:"
    if record.get("status") == "failed" or bench.get("status") != "ok":
        earlier = " (recorded earlier)" if bench.get("resumed") else ""
        return f"{head} failed: {record.get('error') or bench.get('error')}{earlier}"
    s = bench["summary"]

    def fmt(value, spec):
        return "n/a" if value is None else ("inf" if value == float("inf") else spec.format(value))

    resumed = " (finished earlier, skipped)" if bench.get("resumed") else ""
    return (f"{head} {s['frames']} frames, SSIM {fmt(s['crop_ssim'], '{:.3f}')}, "
            f"PSNR {fmt(s['crop_psnr'], '{:.2f}')}, ID distance "
            f"{fmt(s['id_distance'], '{:.3f}')} (same person {fmt(s['id_same'], '{:.0%}')})"
            f"{resumed}")


CONVENTIONS = {
    "crop metrics": "generator output [R,R] vs aligned input crop resized to R (area/bicubic); "
                    "images in [0,1]",
    "SSIM": "Gaussian window σ=1.5 (11 taps), K1=0.01, K2=0.03, border cropped, channel mean "
            "(= skimage structural_similarity, gaussian_weights=True)",
    "PSNR": "10·log10(1/MSE), data range 1; per-video mean over frames with finite PSNR "
            "(infinite frames counted in *_inf_frames); *_psnr_of_mean_mse is 10·log10(1/mean MSE)",
    "MSE": "mean squared error on [0,1]; mse_pm1 = 4·MSE is the paper's [-1,1] scale",
    "LPIPS": "v0.1 from local weights only, both images at 256 px; n/a without weights",
    "ID": f"{EMBEDDING_NAME} descriptors of output and input crop: id_distance = mean "
          "Euclidean distance d (dlib: d < 0.6 same person); id_same = share of frames with "
          "d < 0.6; id_similarity = mean s, s = clip(1 − d/0.6, 0, 1); id_cosine = mean cosine "
          "(~0.9 for any two faces: not an identity measure here). The paper uses "
          "CurricularFace: not comparable in absolute terms",
    "TL-ID/TG-ID": "STIT: mean over adjacent / all pairs of sim(out)/sim(source) with "
                   "sim = s above (0 for different people); *_cosine: with the cosine",
    "warp error": "mean |out_t+1 − warp(out_t, source flow)| over forward-backward-consistent "
                  "pixels, [0,1] RGB, DIS flow at ≤320 px; warp_error_face inside the crop "
                  "square, warp_error whole frame; *_source: the source's own (floor)",
    "crop jitter": "RMS second difference of the crop centre, frame px",
    "latent jitter": "mean ‖w_t − w_t−1‖ (Frobenius over [L,512])",
    "fps": "frames per second of pipeline and metrics together (the metrics run in the "
           "output thread, so this is not the pipeline's speed)",
    "aggregate": "mean over videos of per-video means",
}


def run_benchmark(videos: Sequence[tuple[Path, dict[str, Any]]], out: Path,
                  options: BenchOptions, compare: str | None = None,
                  ) -> list[tuple[str, dict[str, Any]]]:
    """Every variant over ``videos`` ((path, metadata) pairs); prints and writes the tables.

    Returns [(variant name, aggregate)] in variant order.
    """
    import dataclasses

    from vidinv.batch.executor import make_executor
    from vidinv.batch.files import Task
    from vidinv.batch.run import run_tasks
    from vidinv.evaluate.report import FRAME_TABLE_COLUMNS, TABLE_COLUMNS, write_csv
    from vidinv.io_safety import write_json

    pairs = make_variants(options, compare)
    if options.ray is not None:
        # no per-frame bars in the workers (one bar across the videos stays)
        options = dataclasses.replace(options, progress=False, echo=print)
    kit = _load_kit(options)
    engine_kit = None if options.ray is not None else (kit, _editor(kit, options))
    out.mkdir(parents=True, exist_ok=True)
    tasks = []
    for variant, config in pairs:
        folder = (out / variant.name).absolute()
        for path, meta in videos:
            tasks.append(Task(name=f"{variant.name}/{path.stem}", input=Path(path).absolute(),
                              output=folder / "videos" / f"{path.stem}.json", meta=dict(meta),
                              extra=(variant, config, folder)))
    engine = make_executor(BenchJob(options), options.ray, workers=options.workers,
                         gpus_per_task=options.gpus_per_task, kit=engine_kit)
    records, _ = run_tasks(tasks, engine, progress=options.progress and len(tasks) > 1,
                           echo=options.echo, line=_progress_line)
    by_name = {record["name"]: record for record in records}
    results = []
    for variant, _ in pairs:
        variant_records = [_bench_record(by_name[task.name], task.input) for task in tasks
                           if task.extra[0] == variant]
        results.append((variant.name, summarise_variant(variant_records, out, kit, variant)))
    text = render_tables(results, kit, options)
    options.echo(text)
    (out / "table.txt").write_text(text + "\n", encoding="utf-8")
    write_json(out / "comparison.json", {"variants": dict(results),
                                         "conventions": CONVENTIONS})
    columns = ["variant", *(key for key, _, _ in (*TABLE_COLUMNS, *FRAME_TABLE_COLUMNS)),
               "videos", "failed", "frames", "face_frames"]
    write_csv(out / "comparison.csv", [{"variant": name, **values} for name, values in results],
              columns)
    return results


def render_tables(results: Sequence[tuple[str, dict[str, Any]]], kit: _Kit,
                  options: BenchOptions) -> str:
    from vidinv.evaluate.report import FRAME_TABLE_COLUMNS, format_table

    first = results[0][1] if results else {}
    resolution = kit.bundle.generator.resolution
    lines = [
        f"Reconstruction (aligned crop at the generator's {resolution} px; "
        f"{first.get('videos', 0)} videos, {first.get('frames', 0)} frames"
        + (f", {first['failed']} failed" if first.get("failed") else "") + ")",
        format_table(results),
        "",
        "Whole frame (decoded input vs output frame; warp: whole-frame and source floors)",
        format_table(results, FRAME_TABLE_COLUMNS),
        "",
        f"ID dist: mean distance of {EMBEDDING_NAME} descriptors, output vs source crop "
        "(dlib: < 0.6 same person; the paper's ID is a CurricularFace cosine, not comparable). "
        "same: share of frames under 0.6.",
        "TL-ID, TG-ID: STIT's per-pair ratio sim(output pair) / sim(source pair) over adjacent / "
        "all frame pairs, sim = max(0, 1 − d/0.6): 1 = identity as steady as the source, 0 = "
        "the output changes person between frames (they measure consistency, not likeness: "
        "a steady wrong person scores 1; read them with ID dist and same).",
        f"LPIPS: {kit.lpips.name if kit.lpips else 'n/a (no local weights)'}.",
        "MSE on [0,1] images (the paper's Table 2 MSE is on [-1,1]: ×4, see mse_pm1). "
        "PSNR: mean over frames with finite PSNR"
        + _inf_note(results) + ".",
        "warp: mean |out_t+1 − warp(out_t)| by the source's DIS flow inside the face crop, "
        "[0,1] units; jitter: crop centre RMS 2nd difference (px), latent mean ‖Δw‖.",
    ]
    return "\n".join(lines)


def _inf_note(results: Sequence[tuple[str, dict[str, Any]]]) -> str:
    counts = [(name, values.get("crop_psnr_inf_frames", 0)) for name, values in results]
    infinite = [f"{name}: {count}" for name, count in counts if count]
    return f" (identical frames left out — {', '.join(infinite)})" if infinite else ""
