"""What turning rendered faces into host images costs, per image, and the latent smoothing per
frame: the work around the networks that runs once per face.

    python benchmarks/postprocess.py [--repeats 5] [--threads 1]

Rows: ``tensor_to_images`` (the CPU path: [B,3,R,R] float -> B [R,R,3] uint8) against the
code it replaced (``baseline``: the float arithmetic out of place, then non-contiguous views),
for one FFHQ-1024 batch [8,3,1024,1024] and the embedded model's [8,3,64,64]; and
``SmoothLatents`` (centred, σ 1.5) on FFHQ-1024 codes (w [18,512], F [512,16,16]) per frame, on
the host path (float64 NumPy) and the device path (torch, run here on the CPU). On a CUDA
device the images are quantised there and copied as uint8 through pinned memory instead; that
path needs a GPU to time (benchmarks/gpu_check.py). The outputs of old and new are checked
equal before anything is timed.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from vidinv.frame import Frame  # noqa: E402
from vidinv.stages.latent import SmoothLatents  # noqa: E402
from vidinv.stages.model import tensor_to_images  # noqa: E402


def baseline_tensor_to_images(images: torch.Tensor) -> list[np.ndarray]:
    """The code before issue 25 (kept here to measure against)."""
    pixels = ((images.detach().float().cpu() + 1.0) * 127.5).round().clamp(0, 255)
    return list(pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy())


def consume(images: list[np.ndarray]) -> int:
    """What the paste does first with each image: a contiguous array (cv2 copies a view)."""
    return sum(int(np.ascontiguousarray(image)[0, 0, 0]) for image in images)


def per_image_ms(convert, images: torch.Tensor, repeats: int) -> float:
    consume(convert(images))  # warm-up
    best = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        consume(convert(images))
        best = min(best, time.perf_counter() - started)
    return best * 1e3 / images.shape[0]


def smoothing_ms(on_device: bool, frames: int = 40) -> float:
    generator = torch.Generator().manual_seed(0)
    clip = [Frame(index=i, image=np.zeros((1, 1, 3), np.uint8),
                  w=torch.randn(18, 512, generator=generator),
                  features=torch.randn(512, 16, 16, generator=generator))
            for i in range(frames)]
    stage = SmoothLatents("centred", sigma=1.5, on_device=on_device)
    started = time.perf_counter()
    out = list(stage(iter(clip)))
    assert len(out) == frames
    return (time.perf_counter() - started) * 1e3 / frames


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch CPU threads (the pipeline runs its stages with 1)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} thread(s); best of {args.repeats}")
    for shape in ((8, 3, 1024, 1024), (8, 3, 64, 64)):
        images = torch.randn(*shape, generator=torch.Generator().manual_seed(0)).clamp(-1.2, 1.2)
        new, old = tensor_to_images(images), baseline_tensor_to_images(images)
        assert all(np.array_equal(a, b) for a, b in zip(new, old, strict=True))
        before = per_image_ms(baseline_tensor_to_images, images, args.repeats)
        after = per_image_ms(tensor_to_images, images, args.repeats)
        print(f"tensor_to_images {list(shape)}: {before:8.2f} ms/image before, "
              f"{after:8.2f} ms/image after (bit-identical)")
    host, device = smoothing_ms(False), smoothing_ms(True)
    print(f"SmoothLatents centred, FFHQ-1024 codes: {host:6.2f} ms/frame host path (float64 "
          f"NumPy), {device:6.2f} ms/frame device path (torch, here on the CPU)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
