"""What the commands do: edit or invert a video file, or edit a live stream.

These functions join the parts: a source, :func:`~vidinv.pipeline.wiring.build_pipeline`, the
threaded runner and a sink (the video writer, a window, a latent file). Output files are written
whole or not at all.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import time
import zipfile
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidinv.config import PipelineConfig
from vidinv.errors import InputFileError, VidinvError
from vidinv.frame import Frame
from vidinv.latent.errors import UnknownAttributeError
from vidinv.pipeline.models import ModelBundle, make_model_engines
from vidinv.pipeline.runner import RunStats, run_threaded
from vidinv.pipeline.wiring import Networks, build_pipeline, needs_reconstruction

log = logging.getLogger(__name__)


def available_attributes(bundle: ModelBundle) -> dict[str, Path]:
    """Direction name -> file, for the directions stored with the model."""
    from vidinv.latent.directions import list_directions

    if not bundle.directions_folder.is_dir():
        return {}
    names: dict[str, Path] = {}
    for direction_set in list_directions(bundle.directions_folder):
        for direction in direction_set:
            names.setdefault(direction.name, direction_set.source or bundle.directions_folder)
    return names


def resolve_editor(bundle: ModelBundle, attribute: str, strength: float,
                   layers: tuple[int, int] | None = None):
    """A :class:`~vidinv.latent.editing.LatentEditor` for ``attribute`` (a name or a file)."""
    from vidinv.latent.directions import load_direction
    from vidinv.latent.editing import LatentEditor

    layer_range = None if layers is None else range(layers[0], layers[1] + 1)
    known = available_attributes(bundle)
    if attribute in known:
        direction = load_direction(known[attribute], attribute, bundle.generator)
    elif Path(attribute).is_file():
        direction = load_direction(attribute, None, bundle.generator)
    else:
        listed = ", ".join(sorted(known)) or "none stored with this model"
        raise UnknownAttributeError(f"unknown attribute {attribute!r}; this model has: {listed} "
                                    "(or pass a direction file)")
    # load_direction has already checked the direction against the generator (a hash over
    # every weight); the editor need not hash them again.
    if layer_range is None:
        return LatentEditor(bundle.generator, direction, strength, k=bundle.k, check=False)
    return LatentEditor(bundle.generator, direction, strength, layers=layer_range, k=bundle.k,
                        check=False)


def make_networks(bundle: ModelBundle, config: PipelineConfig, editor=None) -> Networks:
    engines = make_model_engines(bundle, config.engine,
                                 with_reconstruction=needs_reconstruction(config))
    return Networks(encode=engines.encode, edit_render=engines.edit_render, edit=editor,
                    crop_size=bundle.crop_size)


def _check_output(input_path: Path, output_path: Path) -> None:
    if output_path.resolve() == input_path.resolve():
        raise InputFileError(f"{output_path}: is the input; choose another output path")
    if not output_path.parent.is_dir():
        raise InputFileError(f"{output_path.parent}: no such folder for the output")
    if output_path.suffix.lower() not in (".mp4", ".mkv", ".mov", ".m4v"):
        raise InputFileError(f"{output_path}: write to .mp4, .mkv, .mov or .m4v")


def process_video(input_path: str | Path, output_path: str | Path, bundle: ModelBundle,
                  config: PipelineConfig, editor=None, *, progress: bool = True,
                  on_frame: Callable[[Frame], None] | None = None) -> RunStats:
    """Invert (``editor`` None) or edit every frame of a video file into ``output_path``.

    The output has the input's frame count, timestamps and audio (copied). ``on_frame`` sees
    each finished frame (e.g. to save its codes).
    """
    from tqdm import tqdm

    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    input_path, output_path = Path(input_path), Path(output_path)
    reader = VideoReader(input_path)
    info = reader.info
    _check_output(input_path, output_path)
    segments = build_pipeline(config, make_networks(bundle, config, editor), str(input_path))
    out_info = info
    if config.output.side_by_side:
        out_info = dataclasses.replace(info, width=info.width * 2)
    with VideoWriter(output_path, out_info, crf=config.output.crf, preset=config.output.preset,
                     audio_from=input_path if info.has_audio else None) as writer, \
            tqdm(total=info.frame_count, unit="frame", disable=not progress,
                 desc=output_path.name, leave=False) as bar:
        def sink(frame: Frame) -> None:
            if on_frame is not None:
                on_frame(frame)
            writer.write(frame)
            bar.update()

        stats = run_threaded(reader, segments, sink, queue_size=config.queue_size)
    return stats


class LatentArchive:
    """Per-frame codes streamed into an ``.npz`` (entries ``w_000000``, ``features_000000``…).

    Written to a temporary file and renamed on :meth:`close`; :meth:`abort` removes it. Frames
    without a face have no entries; ``frames`` lists the indices that have.
    """

    def __init__(self, path: str | Path, with_features: bool = True) -> None:
        self.path = Path(path)
        self.with_features = with_features
        self._tmp = self.path.with_name(f".{self.path.name}.part")
        self._zip = zipfile.ZipFile(self._tmp, "w", zipfile.ZIP_STORED)
        self.frames: list[int] = []

    def _put(self, name: str, array: np.ndarray) -> None:
        with self._zip.open(f"{name}.npy", "w", force_zip64=True) as handle:
            np.lib.format.write_array(handle, np.ascontiguousarray(array))

    def __call__(self, frame: Frame) -> None:
        if frame.w is None:
            return
        self._put(f"w_{frame.index:06d}", frame.w.cpu().numpy())
        if self.with_features and frame.features is not None:
            self._put(f"features_{frame.index:06d}", frame.features.cpu().numpy())
        self.frames.append(frame.index)

    def close(self) -> None:
        self._put("frames", np.asarray(self.frames, dtype=np.int64))
        self._zip.close()
        os.replace(self._tmp, self.path)

    def abort(self) -> None:
        self._zip.close()
        self._tmp.unlink(missing_ok=True)


def invert_video(input_path: str | Path, output_path: str | Path, bundle: ModelBundle,
                 config: PipelineConfig, *, latents_path: str | Path | None = None,
                 progress: bool = True) -> RunStats:
    """Reconstruction only; optionally the per-frame codes into ``latents_path`` (.npz)."""
    archive = LatentArchive(latents_path) if latents_path else None
    try:
        stats = process_video(input_path, output_path, bundle, config, None, progress=progress,
                              on_frame=archive)
    except BaseException:
        if archive is not None:
            archive.abort()
        raise
    if archive is not None:
        archive.close()
    return stats


# --- live --------------------------------------------------------------------------------------


@dataclasses.dataclass
class LiveReport:
    frames_shown: int
    frames_dropped: int
    fps: float
    latency_ms_median: float
    latency_ms_max: float


def _has_display() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or os.name == "nt")


def live(source, bundle: ModelBundle, config: PipelineConfig, editors: dict[str, object],
         *, output_path: str | Path | None = None, max_seconds: float | None = None,
         show: bool | None = None,
         on_frame: Callable[[Frame], None] | None = None) -> LiveReport:
    """Edit a live source; show original | edited in a window, or write it to ``output_path``.

    Keys in the window: ``+``/``-`` change the strength, ``a`` cycles the attribute, ``q`` or
    Esc quits. Latency stays bounded: the source drops its oldest frames when the pipeline is
    slower than the camera (``frames_dropped``). ``on_frame`` sees each shown frame.
    """
    import cv2

    show = _has_display() if show is None else show
    if not show and output_path is None:
        raise VidinvError("no display to show the live window; pass --output FILE.mp4 to write "
                          "the edited stream instead")
    names = list(editors)
    state = {"attribute": 0}
    switch = _SwitchableEditor(editors, names[0] if names else None)
    config = dataclasses.replace(config, output=dataclasses.replace(config.output,
                                                                    side_by_side=True))
    segments = build_pipeline(config, make_networks(bundle, config, switch if names else None),
                              "the live source", live=True)
    # One thread pulls the newest frame from the source and runs every stage: queues between
    # threads would hold frames that grow stale while the next stage is busy.
    segments = [[stage for segment in segments for stage in segment]]
    latencies: list[float] = []
    writer = None
    if output_path is not None:
        from vidinv.video.reader import VideoInfo
        from vidinv.video.writer import VideoWriter

        info = source.info
        writer = VideoWriter(output_path, VideoInfo.for_frames(info.width * 2, info.height,
                                                               info.fps or 30),
                             crf=config.output.crf, preset=config.output.preset)
        writer.open()
    started = time.monotonic()
    shown = 0

    class _Quit(Exception):
        pass

    def sink(frame: Frame) -> None:
        nonlocal shown
        latency = (source.now_pts() - frame.pts) / 1000.0 if frame.pts is not None else 0.0
        latencies.append(latency)
        shown += 1
        if on_frame is not None:
            on_frame(frame)
        fps = shown / max(time.monotonic() - started, 1e-6)
        label = (f"{fps:4.1f} fps  {latency:4.0f} ms  dropped {source.dropped}"
                 + (f"  {switch.name} {switch.strength:+.1f}" if names else ""))
        image = np.ascontiguousarray(frame.image)
        cv2.putText(image, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1,
                    cv2.LINE_AA)
        if writer is not None:
            writer.write(Frame(index=frame.index, image=image, pts=None, time_base=None))
        if show:
            cv2.imshow("vidinv live (original | edited)", image[:, :, ::-1])
            key = cv2.waitKey(1) & 0xFF
            if key in (ord("q"), 27):
                raise _Quit
            if names and key in (ord("+"), ord("=")):
                switch.strength += 0.5
            if names and key == ord("-"):
                switch.strength -= 0.5
            if names and key == ord("a"):
                state["attribute"] = (state["attribute"] + 1) % len(names)
                switch.select(names[state["attribute"]])
        if max_seconds is not None and time.monotonic() - started > max_seconds:
            raise _Quit

    source.start()
    try:
        run_threaded(source, segments, sink, queue_size=1, source_thread=False)
    except _Quit:
        pass
    except BaseException:
        if writer is not None:
            writer.abort()
        raise
    finally:
        source.close()
        if show:
            cv2.destroyAllWindows()
    if writer is not None:
        writer.close()
    seconds = max(time.monotonic() - started, 1e-6)
    return LiveReport(frames_shown=shown, frames_dropped=source.dropped, fps=shown / seconds,
                      latency_ms_median=float(np.median(latencies)) if latencies else 0.0,
                      latency_ms_max=float(np.max(latencies)) if latencies else 0.0)


class _SwitchableEditor:
    """Edits with the selected attribute's editor; the strength is shared and adjustable."""

    def __init__(self, editors: dict[str, object], name: str | None) -> None:
        self.editors = editors
        self.name = name
        self.strength = float(getattr(editors[name], "strength", 1.0)) if name else 0.0

    def select(self, name: str) -> None:
        self.name = name

    @property
    def offset(self):
        """The selected attribute's edit of strength 1, [L,512]."""
        return self.editors[self.name].offset
