"""Before and during a run: does the model know this face, and (optionally) tune the generator
to the clip.

:class:`CheckFamiliarity` is a stage of the run itself: on the first few faces the run encodes
(their aligned crops and codes, no second pass over the clip) :func:`check_familiarity`
measures how well the model reconstructs them (dlib identity distance between each aligned crop
and R = G(w, F), and PSNR); past dlib's same-person line it prints one notice — or, with
``strict``, raises :class:`UnfamiliarFaceError`, which stops the run before its output exists.
:func:`probe_clip` aligns and encodes chosen frames of a clip through the run's own source,
face stages and encode stage; :func:`tune_to_clip` runs the papers' generator tuning (PTI,
:mod:`vidinv.train.pti`) on frames spread over the clip, so that render mode is sharp too.
:func:`adapt_to_clip` does the tuning the config's ``[adapt]`` section asks for and
:func:`familiarity_stage` gives its check.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import torch

from vidinv.config import PipelineConfig
from vidinv.errors import VidinvError
from vidinv.frame import Frame

log = logging.getLogger(__name__)

#: dlib's "same person" line on the descriptor distance.
SAME_PERSON_DISTANCE = 0.6
#: Below this PSNR (crop ↔ R at the generator's resolution) the reconstruction is not the face
#: whatever dlib says (dlib's distance sits near its line for any blurred face).
MIN_PSNR = 16.0


class UnfamiliarFaceError(VidinvError):
    """--strict and the model does not reconstruct the clip's face as the same person."""


@dataclass
class ClipProbe:
    """Aligned crops [K,S,S,3] uint8 of some frames, their codes w [K,L,512] and F [K,C,h,h],
    and the frame indices they came from."""

    crops: np.ndarray
    w: torch.Tensor
    features: torch.Tensor
    indices: list[int]


@dataclass(frozen=True)
class Familiarity:
    """How well the model reconstructs the probed faces."""

    identity_distance: float | None   # mean dlib distance crop ↔ R (None: dlib found no face)
    psnr: float                       # mean PSNR crop ↔ R at the generator's resolution
    frames: int

    @property
    def known(self) -> bool:
        if self.psnr < MIN_PSNR:
            return False
        return self.identity_distance is None or self.identity_distance < SAME_PERSON_DISTANCE

    def describe(self) -> str:
        distance = ("n/a" if self.identity_distance is None
                    else f"{self.identity_distance:.2f}")
        return (f"identity distance {distance} (same person < {SAME_PERSON_DISTANCE}), "
                f"PSNR {self.psnr:.1f} dB (known ≥ {MIN_PSNR:g}) on {self.frames} frames")


def probe_clip(path: str | Path, bundle: Any, config: PipelineConfig,
               indices: list[int] | None = None, first: int = 8) -> ClipProbe | None:
    """Align and encode the frames ``indices`` (default: the first ``first`` frames with a
    face) through the run's own source, face stages and encode stage
    (:func:`~vidinv.pipeline.wiring.open_source`, :func:`~vidinv.pipeline.wiring.face_stages`,
    :class:`~vidinv.stages.model.EncodeFaces`), with the model's torch encoder. None when none
    of them has a face."""
    from vidinv.models.encoder import prepare_input
    from vidinv.pipeline.runner import chain
    from vidinv.pipeline.wiring import face_stages, open_source
    from vidinv.stages.model import EncodeFaces

    wanted = set(indices) if indices is not None else None
    source, _ = open_source(Path(path), config)

    def frames():
        for frame in source:
            if wanted is None or frame.index in wanted:
                yield frame
            if wanted is not None and frame.index >= max(wanted):
                return

    def encode(images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return bundle.encoder(prepare_input(images, bundle.encoder.input_size))

    stages = [*face_stages(config, bundle.crop_size, sparse=wanted is not None),
              EncodeFaces(encode)]
    probed = []
    for frame in chain(stages, frames()):
        if frame.face_found and frame.aligned is not None and frame.w is not None:
            probed.append(frame)
            if wanted is None and len(probed) >= first:
                break
    if not probed:
        return None
    return ClipProbe(np.stack([frame.aligned for frame in probed]),
                     torch.stack([frame.w for frame in probed]),
                     torch.stack([frame.features for frame in probed]),
                     [frame.index for frame in probed])


def _reconstruct(generator: Any, probe: ClipProbe, k: int) -> list[np.ndarray]:
    from vidinv.stages.model import tensor_to_images

    with torch.no_grad():
        return tensor_to_images(generator.synthesis(probe.w, features=probe.features, k=k))


def check_familiarity(probe: ClipProbe, bundle: Any) -> Familiarity:
    from vidinv.metrics.identity import IdentityEmbedder, euclidean_distance
    from vidinv.metrics.image import psnr

    size = bundle.generator.resolution
    reconstructions = _reconstruct(bundle.generator, probe, bundle.k)
    embedder = IdentityEmbedder()
    distances, psnrs = [], []
    for crop, image in zip(probe.crops, reconstructions, strict=True):
        small = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
        psnrs.append(psnr(small, image))
        up = cv2.resize(image, crop.shape[:2][::-1], interpolation=cv2.INTER_CUBIC)
        distance = euclidean_distance(embedder.embed(crop, aligned=True),
                                      embedder.embed(up, aligned=True))
        if distance is not None:
            distances.append(distance)
    return Familiarity(float(np.mean(distances)) if distances else None,
                       float(np.mean(psnrs)), len(probe.crops))


def unfamiliar_message(path: Path, familiarity: Familiarity, paste: str) -> str:
    result = ("the output keeps the person in the clip and moves the face by the model's edit "
              "(transfer paste)" if paste == "transfer" else
              "render paste will show the model's idea of a face, not this person")
    return (f"the model does not know the face in {path.name} ({familiarity.describe()}): "
            f"{result}. For a model of this face run `vidinv personalize {path.name} -o "
            "FOLDER` and pass --model FOLDER, or use the official FFHQ models (README)")


def tune_to_clip(bundle: Any, probe: ClipProbe, steps: int) -> Any:
    """A copy of ``bundle`` whose generator is PTI-tuned on the probed frames."""
    from vidinv.stages.model import images_to_tensor
    from vidinv.train.pti import PTIConfig, tune_generator

    size = bundle.generator.resolution
    targets = images_to_tensor([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA)
                                for c in probe.crops])
    result = tune_generator(bundle.generator, probe.w, targets,
                            PTIConfig(steps=steps, feature_index=bundle.k),
                            features=probe.features)
    log.info("tuned the generator on %d frames of the clip for %d steps (loss %.4f → %.4f)",
             len(probe.crops), len(result.history), result.history[0]["loss"],
             result.history[-1]["loss"])
    return replace(bundle, generator=result.generator)


#: Frames a ``--strict`` run's familiarity check holds per face it checks: key frames come at
#: least every ``face.key_every`` = 4 frames, so its faces are within them.
STRICT_HOLD_PER_FACE = 4


class CheckFamiliarity:
    """Stage: :func:`check_familiarity` on the run's own first ``frames`` encoded faces (the
    first slot's aligned crop [S,S,3] and codes w [L,512], F [C,h,h], taken as the encoder gave
    them, before any smoothing), then ``report(familiarity)``; ``report`` may raise to stop the
    run. The check runs in the stage's thread on the ``frames``-th encoded face, or at the end
    of a clip that has fewer (none: no check).

    Until then the stage holds up to ``hold`` frames (``--strict`` runs:
    :data:`STRICT_HOLD_PER_FACE` × ``frames``), so that nothing reaches the output before the
    verdict and the strict error on an unknown face is the run's only line, as before any frame
    was written; a clip whose first faces come later passes its frames on past ``hold`` and is
    checked when they come. Without ``hold`` frames pass on at once (a note is printed above
    the progress bar), and no frames are kept in memory for it (16 held 4K frames with their
    originals are ~0.8 GB).

    It replaces a probe that decoded, aligned and encoded the clip's first frames a second
    time before the run; with key frames only the key frames are encoded, so the faces checked
    are the first key frames'."""

    def __init__(self, bundle: Any, frames: int,
                 report: Callable[[Familiarity], None], hold: int = 0) -> None:
        if frames < 1:
            raise ValueError(f"the familiarity check needs at least one frame, not {frames}")
        self.bundle = bundle
        self.frames = int(frames)
        self.report = report
        self.hold = int(hold)

    @property
    def latency(self) -> int:
        """Frames held at most (until the check has run)."""
        return self.hold

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        crops: list[np.ndarray] = []
        codes: list[torch.Tensor] = []
        features: list[torch.Tensor] = []
        indices: list[int] = []
        held: deque[Frame] = deque()
        checked = False
        for frame in frames:
            if (not checked and frame.face_found and frame.aligned is not None
                    and frame.w is not None and frame.features is not None):
                crops.append(np.array(frame.aligned, copy=True))
                codes.append(frame.w.detach().to("cpu", torch.float32, copy=True))
                features.append(frame.features.detach().to("cpu", torch.float32, copy=True))
                indices.append(frame.index)
                if len(crops) >= self.frames:
                    self._check(crops, codes, features, indices)
                    checked = True
            held.append(frame)
            while held and (checked or len(held) > self.hold):
                yield held.popleft()
        if not checked and crops:
            self._check(crops, codes, features, indices)
        yield from held

    def _check(self, crops: list[np.ndarray], codes: list[torch.Tensor],
               features: list[torch.Tensor], indices: list[int]) -> None:
        probe = ClipProbe(np.stack(crops), torch.stack(codes), torch.stack(features), indices)
        familiarity = check_familiarity(probe, self.bundle)
        log.debug("familiarity: %s", familiarity.describe())
        self.report(familiarity)


def familiarity_stage(path: str | Path, bundle: Any, config: PipelineConfig
                      ) -> CheckFamiliarity | None:
    """The run's familiarity check of the clip ``path`` (``adapt.check_frames`` faces; None
    when 0): a notice when the model does not know the face, with ``adapt.strict`` an
    :class:`UnfamiliarFaceError` that stops the run (its output is then not written)."""
    settings = config.adapt
    if settings.check_frames <= 0:
        return None
    path = Path(path)

    def report(familiarity: Familiarity) -> None:
        if familiarity.known:
            return
        message = unfamiliar_message(path, familiarity, config.face.paste)
        if settings.strict:
            raise UnfamiliarFaceError(message + "; --strict stops here")
        log.warning("note: %s", message)

    hold = STRICT_HOLD_PER_FACE * settings.check_frames if settings.strict else 0
    return CheckFamiliarity(bundle, settings.check_frames, report, hold=hold)


def adapt_to_clip(path: str | Path, bundle: Any, config: PipelineConfig, editor: Any = None
                  ) -> tuple[Any, Any]:
    """(bundle, editor) for the run: with ``adapt.tune_steps``, the generator tuned to the clip
    (``--tune``); else as given. (The familiarity check is a stage of the run:
    :func:`familiarity_stage`.)"""
    settings = config.adapt
    path = Path(path)
    if settings.tune_steps > 0:
        if config.engine.backend != "torch":
            raise VidinvError("--tune tunes the generator in memory and needs --backend torch "
                              f"(not {config.engine.backend})")
        count = _frame_count(path)
        spread = sorted(set(np.linspace(0, max(count - 1, 0),
                                        settings.tune_frames).round().astype(int).tolist()))
        probe = probe_clip(path, bundle, config, indices=spread)
        if probe is not None:
            bundle = tune_to_clip(bundle, probe, settings.tune_steps)
            if editor is not None and hasattr(editor, "generator"):
                editor.generator = bundle.generator  # Eq. 1's G_k must be the tuned one
    return bundle, editor


def _frame_count(path: Path) -> int:
    from vidinv.video.reader import VideoReader

    return int(VideoReader(path).info.frame_count or 1)
