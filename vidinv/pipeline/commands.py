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
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

import numpy as np

from vidinv.config import PipelineConfig
from vidinv.engines.model_graphs import engines_for_bundle
from vidinv.errors import InputFileError, VidinvError
from vidinv.frame import Frame
from vidinv.io_safety import check_paths
from vidinv.latent.errors import UnknownAttributeError
from vidinv.models.folder import ModelBundle
from vidinv.pipeline.adapt import adapt_to_clip
from vidinv.pipeline.runner import RunStats, run_threaded
from vidinv.pipeline.runtime import codec_threads, stage_runtime
from vidinv.pipeline.wiring import Networks, build_pipeline, needs_reconstruction
from vidinv.stages.output import ORIGINAL

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


def _load_attribute(bundle: ModelBundle, attribute: str, known: dict[str, Path]):
    """The :class:`~vidinv.latent.directions.Direction` for a name of the model or a file."""
    from vidinv.latent.directions import load_direction

    if attribute in known:
        return load_direction(known[attribute], attribute, bundle.generator)
    if Path(attribute).is_file():
        return load_direction(attribute, None, bundle.generator)
    listed = ", ".join(sorted(known)) or "none stored with this model"
    raise UnknownAttributeError(f"unknown attribute {attribute!r}; this model has: {listed} "
                                "(or pass a direction file)")


def resolve_editor(bundle: ModelBundle, attribute: str, strength: float,
                   layers: tuple[int, int] | None = None):
    """A :class:`~vidinv.latent.editing.LatentEditor` for ``attribute`` (a name or a file)."""
    from vidinv.latent.editing import LatentEditor

    layer_range = None if layers is None else range(layers[0], layers[1] + 1)
    direction = _load_attribute(bundle, attribute, available_attributes(bundle))
    # load_direction has already checked the direction against the generator (a hash over
    # every weight); the editor need not hash them again.
    if layer_range is None:
        return LatentEditor(bundle.generator, direction, strength, k=bundle.k, check=False)
    return LatentEditor(bundle.generator, direction, strength, layers=layer_range, k=bundle.k,
                        check=False)


def resolve_edits(bundle: ModelBundle, edits: Mapping[str, float],
                  extra: Sequence[str] = ()):
    """A :class:`~vidinv.latent.editing.CombinedEditor` for ``{attribute: strength}``.

    Attributes are names of the model's directions or direction files; each moves its own
    layers. ``extra`` names attributes to hold at strength 0 (e.g. for ``live``'s keys to
    reach). The directions are summed before one render: three edits cost what one does.
    """
    from vidinv.latent.editing import CombinedEditor

    known = available_attributes(bundle)
    names = list(edits) + [name for name in extra if name not in edits]
    if not names:
        raise UnknownAttributeError("no attribute to edit; this model has: "
                                    + (", ".join(sorted(known)) or "none"))
    directions = {name: _load_attribute(bundle, name, known) for name in names}
    return CombinedEditor.from_directions(bundle.generator, directions, dict(edits), k=bundle.k,
                                          check=False)


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def parse_edits(items: Sequence[str], default_strength: float = 1.0) -> dict[str, float]:
    """``["smile=2", "yaw=-1", "mouth_open"]`` -> ``{"smile": 2.0, "yaw": -1.0,
    "mouth_open": default_strength}`` (``--attr`` values of the command line)."""
    edits: dict[str, float] = {}
    for item in items:
        name, sep, value = item.rpartition("=")
        if not sep or (Path(item).is_file() and not _is_number(value)):
            name, strength = item, float(default_strength)
        else:
            try:
                strength = float(value)
            except ValueError:
                raise UnknownAttributeError(f"--attr {item}: the strength after '=' must be a "
                                            "number, e.g. --attr smile=2") from None
        if not name:
            raise UnknownAttributeError(f"--attr {item}: name the attribute, e.g. smile=2")
        if name in edits:
            raise UnknownAttributeError(f"--attr {name} is given twice; give each attribute "
                                        "once")
        from vidinv.latent.editing import check_strength

        edits[name] = check_strength(strength)
    return edits


def make_networks(bundle: ModelBundle, config: PipelineConfig, editor=None) -> Networks:
    """The encode and edit+render callables for ``config``; ``editor`` (a CombinedEditor or a
    LatentEditor, or None to invert) gives the W+ edit the graph applies."""
    from vidinv.config import ConfigError
    from vidinv.latent.editing import CombinedEditor, LatentEditor

    n_latent = bundle.generator.n_latent
    if config.latent.fine_layers_from >= n_latent:
        raise ConfigError(f"latent.fine_layers_from = {config.latent.fine_layers_from} is "
                          f"beyond this model's W+ layers 0..{n_latent - 1}; use -1 (off) or a "
                          "layer in that range")
    if isinstance(editor, LatentEditor):
        editor = CombinedEditor.from_editors({"edit": editor})
    engines = engines_for_bundle(bundle, config.engine,
                                 with_reconstruction=needs_reconstruction(config))
    return Networks(encode=engines.encode, edit_render=engines.edit_render, edit=editor,
                    crop_size=bundle.crop_size)


VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v")
IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


def input_kind(path: Path) -> str:
    """``'video'``, ``'image'`` (one picture) or ``'folder'`` (a folder of pictures)."""
    from vidinv.video.images import IMAGE_SUFFIXES

    if path.is_dir():
        return "folder"
    return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"


def default_output(input_path: Path, tag: str) -> Path:
    """Where ``edit``/``invert`` write when no ``-o`` is given: ``IN_tag.mp4`` for a video,
    ``IN_tag.png`` (``.jpg``) for a picture, ``IN_tag/`` for a folder of pictures."""
    kind = input_kind(input_path)
    if kind == "folder":
        return input_path.with_name(f"{input_path.name}_{tag}")
    if kind == "image":
        suffix = ".jpg" if input_path.suffix.lower() in (".jpg", ".jpeg") else ".png"
        return input_path.with_name(f"{input_path.stem}_{tag}{suffix}")
    return input_path.with_name(f"{input_path.stem}_{tag}.mp4")


def _check_output(input_path: Path, output_path: Path, bundle: ModelBundle | None = None,
                  latents_path: Path | None = None) -> None:
    """Refuse, before any work, outputs that would destroy an input or each other."""
    kind = input_kind(input_path)
    if kind == "video" and output_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputFileError(f"{output_path}: write to .mp4, .mkv, .mov or .m4v")
    if kind == "image" and output_path.suffix.lower() not in IMAGE_OUTPUT_SUFFIXES:
        raise InputFileError(f"{output_path}: the input is a picture; write to .png or .jpg")
    if kind == "folder" and output_path.exists() and (
            not output_path.is_dir() or any(output_path.iterdir())):
        raise InputFileError(f"{output_path}: exists and is not an empty folder; the input is "
                             "a folder of pictures, so give a new folder for the output")
    if latents_path is not None and latents_path.suffix.lower() != ".npz":
        raise InputFileError(f"--latents {latents_path}: the codes are written as an .npz "
                             "archive; name it e.g. codes.npz")
    reads = [("input", input_path)]
    if bundle is not None:
        reads.append(("model folder", bundle.folder))
    outputs = [("output", output_path)] if kind != "folder" else []
    folders = [("output", output_path)] if kind == "folder" else []
    check_paths(reads, [*outputs, ("--latents", latents_path)], folders)


class _ImageWriter:
    """One picture out (the input was one picture): written whole on close, like the video."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.frame: Frame | None = None

    def __enter__(self) -> _ImageWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            from vidinv.video.errors import VideoWriteError
            from vidinv.video.images import write_image

            if self.frame is None:
                raise VideoWriteError(f"no frame reached {self.path}; nothing was written")
            write_image(self.path, np.ascontiguousarray(self.frame.image))

    def write(self, frame: Frame) -> None:
        self.frame = frame


def _open_source_and_writer(input_path: Path, output_path: Path, config: PipelineConfig):
    """(frames, expected count or None, writer context) for a video, a picture or a folder."""
    kind = input_kind(input_path)
    if kind != "video":
        from vidinv.video.images import ImageFolderWriter, ImageSequenceReader

        reader = ImageSequenceReader(input_path)
        writer = (_ImageWriter(output_path) if kind == "image"
                  else ImageFolderWriter(output_path, overwrite=False))
        return reader, len(reader), writer
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    threads = codec_threads(config.codec_threads, config.output.preset)
    reader = VideoReader(input_path, threads=threads)
    info = reader.info
    out_info = info
    if config.output.side_by_side:
        out_info = dataclasses.replace(info, width=info.width * 2)
    writer = VideoWriter(output_path, out_info, crf=config.output.crf,
                         preset=config.output.preset, threads=threads,
                         audio_from=input_path if info.has_audio else None)
    return reader, info.frame_count, writer


def process_video(input_path: str | Path, output_path: str | Path, bundle: ModelBundle,
                  config: PipelineConfig, editor=None, *, progress: bool = True,
                  on_frame: Callable[[Frame], None] | None = None) -> RunStats:
    """Invert (``editor`` None) or edit every frame of a video file into ``output_path``.

    The output has the input's frame count, timestamps and audio (copied). ``on_frame`` sees
    each finished frame (e.g. to save its codes). A picture (``.png``, ``.jpg``, …) gives a
    picture, a folder of pictures a new folder of numbered ``.png`` frames. An existing output
    file is replaced only once the new one is complete; an existing non-empty output folder
    is refused.
    """
    from tqdm import tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    _check_output(input_path, output_path, bundle)
    reader, total, output_writer = _open_source_and_writer(input_path, output_path, config)
    if input_kind(input_path) == "video":  # the familiarity check and --tune probe video clips
        bundle, editor = adapt_to_clip(input_path, bundle, config, editor)
    segments = build_pipeline(config, make_networks(bundle, config, editor), str(input_path))
    with output_writer as writer, \
            tqdm(total=total, unit="frame", disable=not progress,
                 desc=output_path.name, leave=False) as bar:
        def sink(frame: Frame) -> None:
            if on_frame is not None:
                on_frame(frame)
            writer.write(frame)
            bar.update()

        with stage_runtime(config.engine.threads):
            stats = run_threaded(reader, segments, sink, queue_size=config.queue_size)
    return stats


class LatentArchive:
    """Per-frame codes streamed into an ``.npz`` (entries ``w_000000``, ``features_000000``…).

    Written to a new hidden temporary file (created exclusively under a random name, so a
    leftover or planted file or symlink there is never written through) and renamed on
    :meth:`close` once it reads back whole; :meth:`abort` removes it. Frames without a face
    have no entries; ``frames`` lists the indices that have.
    """

    def __init__(self, path: str | Path, with_features: bool = True) -> None:
        import tempfile

        self.path = Path(path)
        self.with_features = with_features
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".part",
                                   dir=self.path.parent)
        self._tmp = Path(tmp)
        try:
            self._zip = zipfile.ZipFile(os.fdopen(fd, "w+b"), "w", zipfile.ZIP_STORED)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise
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
        """Finish the archive, check that it reads back (CRCs, entries), move it into place."""
        try:
            self._put("frames", np.asarray(self.frames, dtype=np.int64))
            handle = self._zip.fp
            self._zip.close()
            if handle is not None:
                handle.close()
            with zipfile.ZipFile(self._tmp) as archive:
                damaged = archive.testzip()
                entries = len(archive.namelist())
            expected = 1 + len(self.frames) * (1 + self.with_features)
            if damaged is not None or entries < 1 + len(self.frames):
                raise VidinvError(f"{self.path}: the codes archive does not read back "
                                  f"({damaged or f'{entries} of {expected} entries'}); "
                                  "nothing was written")
            os.replace(self._tmp, self.path)
        except BaseException:
            self._tmp.unlink(missing_ok=True)
            raise

    def abort(self) -> None:
        handle = self._zip.fp
        self._zip.close()
        if handle is not None:
            handle.close()
        self._tmp.unlink(missing_ok=True)


def invert_video(input_path: str | Path, output_path: str | Path, bundle: ModelBundle,
                 config: PipelineConfig, *, latents_path: str | Path | None = None,
                 progress: bool = True) -> RunStats:
    """Reconstruction only; optionally the per-frame codes into ``latents_path`` (.npz).

    Every path is checked before any frame is read: ``latents_path`` may be neither the input,
    the output, a model file nor an existing folder.
    """
    latents = Path(latents_path) if latents_path else None
    _check_output(Path(input_path), Path(output_path), bundle, latents)
    archive = LatentArchive(latents) if latents is not None else None
    try:
        stats = process_video(input_path, output_path, bundle, config, None, progress=progress,
                              on_frame=archive)
    except BaseException:
        if archive is not None:
            archive.abort()
        raise
    if archive is not None:
        try:
            archive.close()
        except BaseException:
            Path(output_path).unlink(missing_ok=True)  # no half result: video without codes
            raise
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

    view = np.concatenate([frame.extras.get(ORIGINAL, frame.image), frame.image], axis=1)
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
