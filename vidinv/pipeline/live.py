"""Editing a live source: the pipeline's live segments between a camera (or a clip played as
one) and a window, a recording and/or a virtual camera, with the window's keys."""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from vidinv.config import PipelineConfig
from vidinv.errors import InputFileError, VidinvError
from vidinv.frame import Frame
from vidinv.io_safety import check_paths
from vidinv.models.folder import ModelBundle
from vidinv.pipeline.outputs import VIDEO_SUFFIXES
from vidinv.pipeline.runner import run_threaded
from vidinv.pipeline.runtime import stage_runtime
from vidinv.pipeline.wiring import build_pipeline, make_networks


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


def live(source, bundle: ModelBundle, config: PipelineConfig, editors=None,
         *, output_path: str | Path | None = None, max_seconds: float | None = None,
         show: bool | None = None, on_frame: Callable[[Frame], None] | None = None,
         virtual_camera: bool = False, camera_class=None) -> LiveReport:
    """Edit a live source; show original | edited in a window, write it to ``output_path``,
    and/or send the edited stream to a virtual camera.

    ``editors`` is a :class:`~vidinv.latent.editing.CombinedEditor` (every attribute it holds is
    applied at its own strength, summed before one render), a ``{name: LatentEditor}`` mapping
    (joined into one), or None (reconstruction only). Keys in the window: ``a`` (or Tab)
    selects the next attribute, ``+``/``-`` change the selected one's strength by 0.5, ``0``
    sets it to 0, ``q`` or Esc quits. With ``virtual_camera`` the edited half (the source's size
    and rate, no overlay) goes to a virtual camera (:mod:`vidinv.video.virtualcam`;
    ``camera_class`` replaces pyvirtualcam's, e.g. in tests). Latency stays bounded: the source
    drops its oldest frames when the pipeline is slower than the camera (``frames_dropped``).
    ``on_frame`` sees each shown frame (``image`` the edited frame, the source's size).
    """
    import cv2

    from vidinv.latent.editing import CombinedEditor

    show = _has_display() if show is None else show
    if not show and output_path is None and not virtual_camera:
        raise VidinvError("no display to show the live window; pass --output FILE.mp4 to write "
                          "the edited stream, or --virtual-camera to send it to a camera")
    if output_path is not None:
        output_path = Path(output_path)
        if output_path.suffix.lower() not in VIDEO_SUFFIXES:
            raise InputFileError(f"--output {output_path}: write to .mp4, .mkv, .mov or .m4v")
        check_paths([("--source", getattr(source, "path", None)), ("model folder", bundle.folder)],
                    [("--output", output_path)])
    if editors is not None and not isinstance(editors, CombinedEditor):
        editors = CombinedEditor.from_editors(dict(editors)) if editors else None
    editor: CombinedEditor | None = editors
    controls = LiveControls(editor)
    # original | edited is composed in the sink, and only for the window or the file: the
    # virtual camera takes the edited frame as it is (no 2×-wide copy per frame).
    config = dataclasses.replace(config, output=dataclasses.replace(config.output,
                                                                    side_by_side=False))
    segments = build_pipeline(config, make_networks(bundle, config, editor),
                              "the live source", live=True)
    stats = LiveStats()
    camera = None
    recorder: LiveRecorder | None = None

    class _Quit(Exception):
        pass

    def sink(frame: Frame) -> None:
        latency = stats.shown_frame(source.now_pts(), frame.pts)
        if on_frame is not None:
            on_frame(frame)
        if camera is not None:
            camera.send(frame.image)
        if recorder is not None or show:
            label = (f"{stats.fps:4.1f} fps  {latency:4.0f} ms  dropped {source.dropped}  "
                     f"{controls.label()}")
            view = side_by_side_view(frame, label)
            if recorder is not None:
                recorder.write(view)
            if show:
                cv2.imshow("vidinv live (original | edited)", view[:, :, ::-1])
                if controls.press(cv2.waitKey(1) & 0xFF):
                    raise _Quit
        if max_seconds is not None and stats.seconds > max_seconds:
            raise _Quit

    try:
        if virtual_camera:
            from vidinv.video.virtualcam import open_virtual_camera

            camera = open_virtual_camera(source.info.width, source.info.height,
                                         float(source.info.fps or 30), camera_class=camera_class)
        if output_path is not None:
            recorder = LiveRecorder(output_path, source.info, config)
        stats.start()
        source.start()
        with stage_runtime(config.engine.threads):
            run_threaded(source, segments, sink, queue_size=1, source_thread=False,
                         handoff=True)
    except _Quit:
        pass
    except BaseException:
        if recorder is not None:
            recorder.abort()
        raise
    finally:
        source.close()
        if camera is not None:
            camera.close()
        if show:
            cv2.destroyAllWindows()
    if recorder is not None:
        recorder.close()
    return stats.report(source.dropped)


class LiveStats:
    """Frames shown, their latency (capture → shown) and the shown rate since :meth:`start`."""

    def __init__(self) -> None:
        self.started = time.monotonic()
        self.shown = 0
        self.latencies_ms: list[float] = []

    def start(self) -> None:
        self.started = time.monotonic()

    @property
    def seconds(self) -> float:
        return max(time.monotonic() - self.started, 1e-6)

    @property
    def fps(self) -> float:
        return self.shown / self.seconds

    def shown_frame(self, now_pts: int, frame_pts: int | None) -> float:
        """Count a shown frame; its latency in ms (``pts`` in the source's ms clock)."""
        latency = (now_pts - frame_pts) / 1000.0 if frame_pts is not None else 0.0
        self.latencies_ms.append(latency)
        self.shown += 1
        return latency

    def report(self, dropped: int) -> LiveReport:
        latencies = self.latencies_ms
        return LiveReport(frames_shown=self.shown, frames_dropped=dropped, fps=self.fps,
                          latency_ms_median=float(np.median(latencies)) if latencies else 0.0,
                          latency_ms_max=float(np.max(latencies)) if latencies else 0.0)


def side_by_side_view(frame: Frame, label: str) -> np.ndarray:
    """[H,2W,3] uint8: the original | the edited frame, ``label`` written at the top left."""
    import cv2

    original = frame.original if frame.original is not None else frame.image
    view = np.concatenate([original, frame.image], axis=1)
    cv2.putText(view, label, (8, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 0), 1,
                cv2.LINE_AA)
    return view


class LiveRecorder:
    """Writes the live view (original | edited, 2× the source's width) to a video file, whole
    or not at all (:meth:`abort` leaves nothing)."""

    def __init__(self, path: Path, info, config: PipelineConfig) -> None:
        from vidinv.video.reader import VideoInfo
        from vidinv.video.writer import VideoWriter

        self.writer = VideoWriter(path, VideoInfo.for_frames(info.width * 2, info.height,
                                                             info.fps or 30),
                                  crf=config.output.crf, preset=config.output.preset)
        self.writer.open()

    def write(self, view: np.ndarray) -> None:
        self.writer.write(Frame(index=self.writer.frames_written, image=view, pts=None,
                                time_base=None))

    def close(self) -> None:
        self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class LiveControls:
    """The live window's keys over a :class:`~vidinv.latent.editing.CombinedEditor`.

    ``a`` or Tab selects the next attribute, ``+``/``-`` move the selected one's strength by
    ``step``, ``0`` sets it to 0; ``q`` or Esc asks to quit (:meth:`press` returns True).
    """

    def __init__(self, editor=None, step: float = 0.5) -> None:
        self.editor = editor
        self.step = step
        names = editor.names if editor is not None else []
        self.selected: str | None = next(
            (name for name in names if editor.strengths[name] != 0.0), names[0] if names else None)

    def press(self, key: int) -> bool:
        """Apply one key code (as ``cv2.waitKey`` returns it); True means quit."""
        if key in (ord("q"), 27):
            return True
        if self.editor is None or self.selected is None:
            return False
        from vidinv.latent.editing import MAX_STRENGTH

        strengths = self.editor.strengths
        if key in (ord("+"), ord("=")):
            strengths[self.selected] = min(strengths[self.selected] + self.step, MAX_STRENGTH)
        elif key in (ord("-"), ord("_")):
            strengths[self.selected] = max(strengths[self.selected] - self.step, -MAX_STRENGTH)
        elif key == ord("0"):
            strengths[self.selected] = 0.0
        elif key in (ord("a"), 9):
            names = self.editor.names
            self.selected = names[(names.index(self.selected) + 1) % len(names)]
        return False

    def label(self) -> str:
        """The edits in force, the selected one in brackets: ``[smile +1.0] yaw -0.5``."""
        if self.editor is None:
            return ""
        return " ".join(f"[{name} {alpha:+.1f}]" if name == self.selected
                        else f"{name} {alpha:+.1f}"
                        for name, alpha in self.editor.strengths.items()
                        if alpha != 0.0 or name == self.selected)
