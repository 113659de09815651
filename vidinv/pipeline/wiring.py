"""The one place the pipeline is wired: config + models -> stage segments (one thread each).

    face segment:   DetectLandmarks → TrackFace → RequireFace → SmoothCrop → AlignFace
    model segment:  EncodeFaces → SmoothLatents → RenderFaces (the edit and the render: one graph)
    output segment: PasteBack → (SideBySide)

Decoding runs in the runner's source thread and encoding-out in the calling thread, so a run
uses five threads joined by bounded queues (:func:`vidinv.pipeline.runner.run_threaded`).

Live, the same stages run in three threads of about equal work; the first pulls the newest
camera frame itself, and each thread hands a frame to the
next and waits until it is taken (``run_threaded(handoff=True)``), so no frame waits in a
queue:

    live thread 1: DetectLandmarks → … → AlignFace → EncodeFaces → SmoothLatents
    live thread 2: RenderFaces
    live thread 3: PasteBack

One thread for everything caps live at 1 / Σ stages and leaves the second core to the
camera's decoding; three threads split the work so that each stage's time, not their sum,
bounds the frame rate. ``benchmarks/live.py`` prints the frame rate shown against the
camera's and each stage's time per frame.
"""

from __future__ import annotations

from dataclasses import dataclass

from vidinv.config import PipelineConfig
from vidinv.pipeline.runner import Stage
from vidinv.stages.face import (
    AlignFace,
    DetectLandmarks,
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


def needs_reconstruction(config: PipelineConfig) -> bool:
    """Whether the paste needs R = G(w, F) next to the edit (the transfer paste does)."""
    return config.face.paste == "transfer"


def build_pipeline(config: PipelineConfig, networks: Networks, source_name: str,
                   *, live: bool = False) -> list[list[Stage]]:
    """Stage segments (one thread each) for ``config``; ``live`` forces the causal,
    zero-look-ahead choices and the three live segments."""
    face, latent = config.face, config.latent
    crop_smoothing, latent_smoothing = face.crop_smoothing, latent.smoothing
    max_gap, batch_size = face.max_gap, config.engine.batch_size
    if live:
        crop_smoothing = "causal" if crop_smoothing == "centred" else crop_smoothing
        latent_smoothing = "causal" if latent_smoothing == "centred" else latent_smoothing
        max_gap, batch_size = 0, 1

    face_segment: list[Stage] = [
        KeepOriginal(),
        # MediaPipe tracks the face between detections in files too: the mesh follows the
        # previous landmarks and the detector runs only when the face is lost (cheaper than
        # detecting on every frame).
        DetectLandmarks(face.landmarks, **({"mode": "tracking"}
                                           if face.landmarks == "mediapipe" else {})),
        TrackFace(max_gap=max_gap),
    ]
    if not live:
        face_segment.append(RequireFace(source_name))
    face_segment += [SmoothCrop(crop_smoothing), AlignFace(networks.crop_size)]

    model_segment: list[Stage] = [
        EncodeFaces(networks.encode, batch_size),
        SmoothLatents(latent_smoothing, alpha=latent.alpha, sigma=latent.sigma,
                      fine_layers_from=(latent.fine_layers_from
                                        if latent.fine_layers_from >= 0 else None)),
        RenderFaces(networks.edit_render, networks.edit, batch_size,
                    with_reconstruction=needs_reconstruction(config)),
    ]
    output_segment: list[Stage] = [
        PasteBack(face.mask, color_match=None if face.color_match == "none" else face.color_match,
                  mode=face.paste),
    ]
    if config.output.side_by_side:
        output_segment.append(SideBySide())
    if live:
        return [face_segment + model_segment[:-1], model_segment[-1:], output_segment]
    return [face_segment, model_segment, output_segment]
