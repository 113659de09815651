"""The one place the pipeline is wired: a source, config + models -> stage segments (one thread
each), a sink.

    source:         VideoReader (PyAV) | ImageSequenceReader (a picture or a folder of them)
    face segment:   DetectLandmarks → TrackFace → RequireFace → SmoothCrop → AlignFace
                    → (ChooseKeyFrames)
    model segment:  EncodeFaces → (CheckFamiliarity) → SmoothLatents → RenderFaces (the edit and
                    the render: one graph)
    output segment: MaskEdit → PasteBack → (SideBySide)
    sink:           VideoWriter (re-encode, audio copied) | ImageWriter | ImageFolderWriter

The source is read in the runner's source thread and the sink written in the calling thread, so
a run uses five threads joined by bounded queues (:func:`vidinv.pipeline.runner.run_threaded`).

Live, the source is a camera (or a clip played as one) and the same stages run in three threads
of about equal work; the first pulls the newest camera frame itself, and each thread hands a
frame to the next and waits until it is taken (``run_threaded(handoff=True)``), so no frame
waits in a queue (``benchmarks/live.py`` measures the rate and the latency):

    live thread 1: DetectLandmarks → … → AlignFace → EncodeFaces → SmoothLatents
    live thread 2: RenderFaces
    live thread 3: MaskEdit → PasteBack

One thread for everything caps live at 1 / Σ stages and leaves the second core to the
camera's decoding; three threads split the work so that each stage's time, not their sum,
bounds the frame rate. ``benchmarks/live.py`` prints the frame rate shown against the
camera's and each stage's time per frame.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vidinv.config import PipelineConfig, parse_regions
from vidinv.engines.model_graphs import engines_for_bundle
from vidinv.face.expressions import edit_actions
from vidinv.face.identities import FaceChoice, parse_face_choice
from vidinv.face.symmetry import is_symmetric
from vidinv.frame import Frame
from vidinv.models.folder import ModelBundle
from vidinv.pipeline.outputs import input_kind
from vidinv.pipeline.runner import Stage
from vidinv.pipeline.runtime import codec_threads
from vidinv.stages.face import (
    AlignFace,
    ChooseKeyFrames,
    DetectLandmarks,
    MaskEdit,
    PasteBack,
    RequireFace,
    SmoothCrop,
    TrackFace,
)
from vidinv.stages.latent import SmoothLatents
from vidinv.stages.model import EditRenderFn, EditSource, EncodeFaces, EncodeFn, RenderFaces
from vidinv.stages.output import KeepOriginal, SideBySide


@dataclass(frozen=True)
class Networks:
    """The model callables, the edit (None: reconstruct) and the aligned-crop size.

    ``edit_render`` must return the reconstruction too when the config's paste is
    ``transfer`` (:func:`vidinv.engines.model_graphs.engines_for_bundle` with_reconstruction).
    """

    encode: EncodeFn
    edit_render: EditRenderFn
    edit: EditSource | None
    crop_size: int
    #: [h,w,3] uint8: the person's own open mouth from the model folder (None: drawn teeth)
    mouth_inside: np.ndarray | None = None


def open_source(input_path: Path, config: PipelineConfig) -> tuple[Iterable[Frame], int | None]:
    """The frames of a video, a picture or a folder of pictures, and their count (None: not
    known ahead)."""
    if input_kind(input_path) != "video":
        from vidinv.video.images import ImageSequenceReader

        reader = ImageSequenceReader(input_path)
        return reader, len(reader)
    from vidinv.video.reader import VideoReader

    reader = VideoReader(input_path, threads=codec_threads(config.codec_threads,
                                                           config.output.preset))
    return reader, reader.info.frame_count


def open_sink(input_path: Path, output_path: Path, config: PipelineConfig, source):
    """The writer (a context manager with ``write(frame)``) of what ``source`` (from
    :func:`open_source`) gives: a video with the input's timing and audio, one picture, or a
    new folder of pictures; each is complete on a clean exit or not there at all."""
    kind = input_kind(input_path)
    if kind != "video":
        from vidinv.video.images import ImageFolderWriter, ImageWriter

        return (ImageWriter(output_path) if kind == "image"
                else ImageFolderWriter(output_path, overwrite=False))
    from vidinv.video.writer import VideoWriter

    info = source.info
    out_info = info
    if config.output.side_by_side:
        out_info = dataclasses.replace(info, width=info.width * 2)
    return VideoWriter(output_path, out_info, crf=config.output.crf,
                       preset=config.output.preset,
                       threads=codec_threads(config.codec_threads, config.output.preset),
                       audio_from=input_path if info.has_audio else None)


def needs_reconstruction(config: PipelineConfig) -> bool:
    """Whether the paste needs R = G(w, F) next to the edit (the transfer paste does)."""
    return config.face.paste == "transfer"


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
    if isinstance(editor, LatentEditor):  # named as its direction (symmetric_edit reads it)
        editor = CombinedEditor.from_editors({editor.name or "edit": editor})
    engines = engines_for_bundle(bundle, config.engine,
                                 with_reconstruction=needs_reconstruction(config))
    return Networks(encode=engines.encode, edit_render=engines.edit_render, edit=editor,
                    mouth_inside=bundle.mouth_inside,
                    crop_size=bundle.crop_size)


#: The most faces looked for in a frame when more than the largest may be edited.
MAX_FACES = 8
#: MediaPipe's tracking mode looks for faces it does not follow yet every this many frames
#: (when several are edited: a person who comes into view is found within this many).
REDETECT_EVERY = 5


def symmetric_edit(edit: EditSource | None) -> Callable[[], bool]:
    """Asked on each key frame: whether the edits in force are all symmetric by nature
    (:func:`~vidinv.face.symmetry.is_symmetric`; an editor that cannot name them is not)."""
    names = getattr(edit, "active_names", None)
    return lambda: names is not None and is_symmetric(names())


def edit_actions_of(edit: EditSource | None) -> Callable[[], dict[str, float] | None]:
    """Asked on each key frame: the expressions (and amounts) the edits in force were taught
    (:func:`~vidinv.face.expressions.edit_actions`), or None where the editor cannot name its
    edits' strengths or one of them is not such an expression."""
    if not isinstance(getattr(edit, "strengths", None), dict):
        return lambda: None
    return lambda: edit_actions(edit.strengths)  # read when asked: sliders change them


def uses_key_frames(config: PipelineConfig, networks: Networks) -> bool:
    """Whether the networks run on key frames only and the paste carries the edit between
    them: ``face.key_frames``, a transfer paste (the field it carries lives in the crop; a
    pasted rendering would be a stale face) and an edit (an inversion keeps every frame's
    codes)."""
    return (config.face.key_frames and config.face.paste == "transfer"
            and networks.edit is not None)


def face_choice(config: PipelineConfig) -> FaceChoice:
    """The faces ``config`` edits (face.select, face.reference; errors are one line)."""
    face = config.face
    return parse_face_choice(face.select, face.reference, landmarks=face.landmarks)


def face_stages(config: PipelineConfig, crop_size: int, source_name: str | None = None,
                *, live: bool = False, sparse: bool = False) -> list[Stage]:
    """The face segment: frames in, ``aligned`` [S,S,3] crops of size ``crop_size`` out.

    ``source_name`` adds :class:`RequireFace` (a clip without any face is a user error);
    ``live`` forces the causal, no-gap choices; ``sparse`` is for frames taken far apart (a
    probe of a clip): no crop smoothing and no gap bridging across them."""
    face = config.face
    crop_smoothing, max_gap = face.crop_smoothing, face.max_gap
    if live:
        crop_smoothing = "causal" if crop_smoothing == "centred" else crop_smoothing
        max_gap = 0
    if sparse:
        crop_smoothing, max_gap = "none", 0
    choice = face_choice(config)
    # MediaPipe tracks the face between detections in files too: the mesh follows the
    # previous landmarks and the detector runs only when the face is lost.
    detector_options: dict = {"mode": "tracking"} if face.landmarks == "mediapipe" else {}
    if choice.multi:  # every face, so each can be followed as a person
        detector_options["max_faces"] = MAX_FACES
        if face.landmarks == "mediapipe":
            detector_options["redetect_every"] = REDETECT_EVERY
    stages: list[Stage] = [
        KeepOriginal(),
        DetectLandmarks(face.landmarks, **detector_options),
        TrackFace(choice=choice, max_gap=max_gap),
    ]
    if source_name is not None:
        stages.append(RequireFace(source_name))
    return stages + [SmoothCrop(crop_smoothing), AlignFace(crop_size)]


def build_pipeline(config: PipelineConfig, networks: Networks, source_name: str,
                   *, live: bool = False, familiarity: Stage | None = None
                   ) -> list[list[Stage]]:
    """Stage segments (one thread each) for ``config``; ``live`` forces the causal,
    zero-look-ahead choices and the three live segments. ``familiarity`` (a
    :class:`~vidinv.pipeline.adapt.CheckFamiliarity`) goes right after the encoder, where the
    faces' crops and raw codes are."""
    face, latent = config.face, config.latent
    latent_smoothing, batch_size = latent.smoothing, config.engine.batch_size
    if live:
        latent_smoothing = "causal" if latent_smoothing == "centred" else latent_smoothing
        batch_size = 1

    face_segment = face_stages(config, networks.crop_size, None if live else source_name,
                               live=live)
    key_frames = uses_key_frames(config, networks)
    if key_frames:
        face_segment.append(ChooseKeyFrames(face.key_motion, face.key_every))

    model_segment: list[Stage] = [
        EncodeFaces(networks.encode, batch_size),
        *([familiarity] if familiarity is not None else []),
        SmoothLatents(latent_smoothing, alpha=latent.alpha, sigma=latent.sigma,
                      fine_layers_from=(latent.fine_layers_from
                                        if latent.fine_layers_from >= 0 else None),
                      timed=key_frames),
        RenderFaces(networks.edit_render, networks.edit, batch_size,
                    with_reconstruction=needs_reconstruction(config)),
    ]
    output_segment: list[Stage] = [
        MaskEdit(parse_regions(face.region), occlusion=face.occlusion,
                 fade_frames=face.fade_frames, live=live),
        PasteBack(face.mask, color_match=face.color_match, mode=face.paste, carry=key_frames,
                  interpolate=key_frames and not live,
                  symmetric=symmetric_edit(networks.edit) if face.symmetric else False,
                  actions=edit_actions_of(networks.edit) if face.actions else None,
                  draw=face.draw, mouth_inside=networks.mouth_inside),
    ]
    if config.output.side_by_side:
        output_segment.append(SideBySide())
    if live:
        return [face_segment + model_segment[:-1], model_segment[-1:], output_segment]
    return [face_segment, model_segment, output_segment]
