"""The model stages: encode the aligned face; edit and render it (one graph, one call).

Each stage maps an iterator of :class:`~vidinv.frame.Frame` to an iterator of frames, in order,
and declares ``latency`` (frames held back). They work on the frames' faces
(:class:`~vidinv.frame.FaceSlot`; every face of the frames of a batch in one call); frames
without a face pass through untouched. The networks come in as plain callables built by
:mod:`vidinv.engines.model_graphs`, so no stage branches on the backend; their tensors stay
on the engine's device between the stages (only the rendered images come to the host).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Protocol

import numpy as np
import torch

from vidinv.engines.model_graphs import EditRenderFn, EncodeFn
from vidinv.frame import FaceSlot, Frame


def images_to_tensor(images: list[np.ndarray]) -> torch.Tensor:
    """[S,S,3] uint8 RGB images -> [B,3,S,S] float32 in [-1,1]."""
    batch = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).float()
    return batch / 127.5 - 1.0


def quantised(images: torch.Tensor) -> torch.Tensor:
    """[B,3,R,R] float in about [-1,1] -> [B,R,R,3] uint8 RGB (clipped, rounded), contiguous,
    on the images' device: ((x + 1) · 127.5) rounded half to even, clamped to 0..255."""
    pixels = images.detach().float() + 1.0  # a new tensor: the caller's is not written
    pixels.mul_(127.5).round_().clamp_(0, 255)
    batch, _, height, width = pixels.shape
    out = torch.empty((batch, height, width, 3), dtype=torch.uint8, device=pixels.device)
    return out.copy_(pixels.permute(0, 2, 3, 1))  # one pass: transposed and converted


def tensor_to_images(images: torch.Tensor) -> list[np.ndarray]:
    """[B,3,R,R] float in about [-1,1] -> list of [R,R,3] uint8 RGB (clipped, rounded), each
    contiguous. CUDA tensors go through :func:`device_images_to_host`."""
    if images.device.type == "cuda":
        return device_images_to_host(images)[0]
    return list(quantised(images.cpu()).numpy())


def pinned_host_buffer(shape: tuple[int, ...]) -> torch.Tensor:
    """A uint8 host tensor in page-locked memory (torch caches these blocks), which the GPU
    copies into asynchronously and at full bus speed."""
    return torch.empty(shape, dtype=torch.uint8, pin_memory=True)


def device_images_to_host(*batches: torch.Tensor) -> list[list[np.ndarray]]:
    """[B,3,R,R] float CUDA tensors -> per batch, B [R,R,3] uint8 host images.

    Quantised on the device (a quarter of the bytes to move, and no float work on the host),
    copied with ``non_blocking`` into pinned memory, all batches queued before one event on the
    current stream is waited for: the host reads nothing before the copies are done.
    """
    device = batches[0].device
    hosts = []
    for images in batches:
        pixels = quantised(images)
        host = pinned_host_buffer(tuple(pixels.shape))
        host.copy_(pixels, non_blocking=True)
        hosts.append(host)
    copied = torch.cuda.Event()
    copied.record(torch.cuda.current_stream(device))
    copied.synchronize()
    return [list(host.numpy()) for host in hosts]


def in_batches(frames: Iterable[Frame], batch_size: int,
               wants: Callable[[FaceSlot], bool]) -> Iterator[tuple[list[Frame], list[FaceSlot]]]:
    """Group frames, in order, so that each group holds ≤ ``batch_size`` faces ``wants``.

    Yields (frames to pass on, in order; the wanted faces of the group's frames). Faces are
    the frames' :class:`~vidinv.frame.FaceSlot` s, so one call batches every face of several
    frames; a frame whose faces fill a batch before its last one is passed on with the group
    of its last face. A group is released as soon as it has ``batch_size`` wanted faces, or at
    the end; frames without a wanted face never wait alone.
    """
    group: list[Frame] = []
    wanted: list[FaceSlot] = []
    for frame in frames:
        faces = [slot for slot in frame.slots if wants(slot)]
        for position, slot in enumerate(faces, start=1):
            wanted.append(slot)
            if len(wanted) >= batch_size and position < len(faces):
                yield group, wanted
                group, wanted = [], []
        group.append(frame)
        if len(wanted) >= batch_size or not wanted:
            yield group, wanted
            group, wanted = [], []
    if group:
        yield group, wanted


class EncodeFaces:
    """Sets each face's ``w`` [L,512] and ``features`` [C,h,w] from its ``aligned`` crop (not
    for faces ``carried`` between key frames: their edit is carried by the paste)."""

    def __init__(self, encode: EncodeFn, batch_size: int = 1) -> None:
        self.encode = encode
        self.batch_size = max(1, int(batch_size))

    @property
    def latency(self) -> int:
        return self.batch_size - 1

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for group, wanted in in_batches(frames, self.batch_size,
                                        lambda face: face.aligned is not None
                                        and not face.carried):
            if wanted:
                with torch.inference_mode():
                    w, features = self.encode(images_to_tensor([f.aligned for f in wanted]))
                for face, code, feature in zip(wanted, w, features, strict=True):
                    face.w, face.features = code, feature
            yield from group


class EditSource(Protocol):
    """What :class:`RenderFaces` needs from an editor: the W+ edit in force.

    ``offset`` [L,512] float32 is the whole move at the current strengths (zero on untouched
    layers): a :class:`~vidinv.latent.editing.CombinedEditor`'s Σ αᵢ · dᵢ — several attributes
    are one offset, one render. It is read once per batch, so a live key or slider takes effect
    from the next batch.
    """

    @property
    def offset(self) -> torch.Tensor: ...


class RenderFaces:
    """Edits and renders in one call: sets each face's ``rendered`` [R,R,3] uint8, the edit
    E = G(w̃, F̃) (the reconstruction when there is no edit).

    With ``with_reconstruction`` it also sets ``reconstruction``, the unedited
    R = G(w, F), which the same graph renders in the same batch as the edit. The edit (w̃ =
    w + offset, F̃ by paper 003's Eq. 1) runs inside the ``edit_render`` graph, batched, on
    the engine's backend and device; ``w`` and ``features`` stay as encoded.
    Without an edit in force (no editor, or every strength 0) R is E itself, the same image.
    """

    def __init__(self, edit_render: EditRenderFn, edit: EditSource | None = None,
                 batch_size: int = 1, with_reconstruction: bool = False) -> None:
        self.edit_render = edit_render
        self.edit = edit
        self.batch_size = max(1, int(batch_size))
        self.with_reconstruction = with_reconstruction

    @property
    def latency(self) -> int:
        return self.batch_size - 1

    def _offset(self) -> torch.Tensor | None:
        """The edit in force [L,512], or None when there is none (no editor, all zero)."""
        if self.edit is None:
            return None
        offset = self.edit.offset
        return offset if bool(offset.any()) else None

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]:
        for group, wanted in in_batches(frames, self.batch_size,
                                        lambda face: face.w is not None):
            if wanted:
                with torch.inference_mode():
                    w = torch.stack([f.w for f in wanted])
                    features = torch.stack([f.features for f in wanted])
                    offset = self._offset()
                    offsets = (torch.zeros_like(w) if offset is None
                               else offset.to(device=w.device, dtype=w.dtype).expand_as(w))
                    edited, reconstruction = self.edit_render(w, features, offsets)
                    wants_reconstruction = self.with_reconstruction and offset is not None
                    if wants_reconstruction and reconstruction is None:
                        raise ValueError("the edit_render callable returned no "
                                         "reconstruction; make it with_reconstruction")
                    renders = [edited, reconstruction] if wants_reconstruction else [edited]
                    if edited.device.type == "cuda":  # both copies queued, one wait
                        host = device_images_to_host(*renders)
                    else:
                        host = [tensor_to_images(batch) for batch in renders]
                    images = host[0]
                    if wants_reconstruction:
                        for face, image in zip(wanted, host[1], strict=True):
                            face.reconstruction = image
                for face, image in zip(wanted, images, strict=True):
                    face.rendered = image
                    if self.with_reconstruction and offset is None:
                        face.reconstruction = image  # unedited: R is E
            yield from group
