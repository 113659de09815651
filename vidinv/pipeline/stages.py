"""The model stages: encode the aligned face, edit the codes, render the face.

Each stage maps an iterator of :class:`~vidinv.frame.Frame` to an iterator of frames, in order,
and declares ``latency`` (frames held back). Frames without a face (``aligned`` is None) pass
through untouched. The networks come in as plain callables built by
:mod:`vidinv.pipeline.models`, so no stage branches on the backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator

import numpy as np
import torch

from vidinv.frame import Frame

#: x [B,3,S,S] float32 in [-1,1] -> (w [B,L,512], F [B,C,h,w])
EncodeFn = Callable[[torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: (w [B,L,512], F [B,C,h,w]) -> (w̃, F̃), same shapes
EditFn = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]]
#: (w [B,L,512], F [B,C,h,w]) -> image [B,3,R,R] float32 in about [-1,1]
RenderFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """[S,S,3] uint8 RGB images -> [B,3,S,S] float32 in [-1,1]."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def tensor_to_images(images: torch.Tensor) -> list[np.ndarray]:
    """[B,3,R,R] float in about [-1,1] -> list of [R,R,3] uint8 RGB (clipped, rounded)."""
    pixels = ((images.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return list(pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy())


def in_batches(frames: Iterable[Frame], batch_size: int,
               wants: Callable[[Frame], bool]) -> Iterator[tuple[list[Frame], list[Frame]]]:
    """Group frames, in order, so that each group holds ≤ ``batch_size`` frames ``wants``.

    Yields (all frames of the group in order, the wanted ones). A group is released as soon as
    it has ``batch_size`` wanted frames, or at the end; frames nobody wants never wait alone.
    """
    group: list[Frame] = []
    wanted: list[Frame] = []
    for frame in frames:
        group.append(frame)
        if wants(frame):
            wanted.append(frame)
        if len(wanted) >= batch_size or not wanted:
            yield group, wanted
            group, wanted = [], []
    if group:
        yield group, wanted


class EncodeFaces:
    """Sets ``frame.w`` [L,512] and ``frame.features`` [C,h,w] from ``frame.aligned``."""

    def __init__(self, encode: EncodeFn, batch_size: int = 1) -> None:
        self.encode = encode
        self.batch_size = max(1, int(batch_size))

    @property
    def latency(self) -> int:
        return self.batch_size - 1

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for group, wanted in in_batches(frames, self.batch_size,
                                        lambda frame: frame.aligned is not None):
            if wanted:
                with torch.inference_mode():
                    w, features = self.encode(images_to_tensor([f.aligned for f in wanted]))
                for frame, code, feature in zip(wanted, w, features, strict=True):
                    frame.w, frame.features = code, feature
            yield from group


class EditLatents:
    """Sets ``frame.w_edit`` and ``frame.features_edit`` with the editor (Eq. 1 inside)."""

    latency = 0

    def __init__(self, edit: EditFn | None) -> None:
        self.edit = edit

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for frame in frames:
            if frame.w is not None:
                if self.edit is None:
                    frame.w_edit, frame.features_edit = frame.w, frame.features
                else:
                    with torch.inference_mode():
                        w_edit, features_edit = self.edit(frame.w[None], frame.features[None])
                    frame.w_edit, frame.features_edit = w_edit[0], features_edit[0]
            yield frame


class RenderFaces:
    """Sets ``frame.rendered`` [R,R,3] uint8 from the edited codes (the codes if unedited).

    With ``with_reconstruction`` it also sets ``frame.reconstruction``, the unedited G(w, F),
    rendered in the same generator call as the edit (the batch is [edited..., unedited...]).
    """

    def __init__(self, render: RenderFn, batch_size: int = 1,
                 with_reconstruction: bool = False) -> None:
        self.render = render
        self.batch_size = max(1, int(batch_size))
        self.with_reconstruction = with_reconstruction

    @property
    def latency(self) -> int:
        return self.batch_size - 1

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for group, wanted in in_batches(frames, self.batch_size,
                                        lambda frame: frame.w is not None):
            if wanted:
                w = [f.w if f.w_edit is None else f.w_edit for f in wanted]
                features = [f.features if f.features_edit is None else f.features_edit
                            for f in wanted]
                # Unedited faces (strength 0, no edit) are rendered once: R is E.
                edited = [f for f in wanted if not _unedited(f)] if self.with_reconstruction else []
                w += [f.w for f in edited]
                features += [f.features for f in edited]
                with torch.inference_mode():
                    images = tensor_to_images(self.render(torch.stack(w), torch.stack(features)))
                for frame, image in zip(wanted, images, strict=False):
                    frame.rendered = image
                    if self.with_reconstruction and _unedited(frame):
                        frame.reconstruction = image
                for frame, image in zip(edited, images[len(wanted):], strict=True):
                    frame.reconstruction = image
            yield from group


def _unedited(frame: Frame) -> bool:
    """True when the frame's edited codes are its codes (no edit, or strength 0)."""
    return ((frame.w_edit is None or torch.equal(frame.w_edit, frame.w))
            and (frame.features_edit is None or torch.equal(frame.features_edit,
                                                             frame.features)))
