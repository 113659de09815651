"""Per-frame metrics gathered from the pipeline's finished frames (``process_video(on_frame=…)``).

Memory stays bounded: per frame it keeps a row of numbers, two 128-d embeddings, two crop
centres; for the warping error only the previous frame pair (shrunk); for the latent jitter
only the previous code.

Which images (see :mod:`vidinv.metrics.image`):

* crop metrics (SSIM, PSNR, MSE, LPIPS): ``rendered`` [R,R,3] vs ``aligned`` [S,S,3] resized
  to R — the paper's inversion metrics at the generator's resolution;
* ID: the Euclidean distance of the dlib descriptors of ``rendered`` and ``aligned`` (both
  FFHQ-aligned), whether it is under dlib's same-person line 0.6, and s = clip(1 − d/0.6, 0, 1)
  (see :mod:`vidinv.metrics.identity`); their cosine too (``id_cosine``, for comparison);
* TL-ID / TG-ID: those same embeddings, output = ``rendered``, source = ``aligned``, on s
  (``*_cosine``: STIT's cosine form);
* frame metrics: ``original`` (the decoded frame) vs ``image`` (the output frame);
* warping error: on the whole frames (original as source, image as output) and on the face:
  the pixels inside this frame's crop square;
* crop jitter: the crop centre (``crop_from_frame``⁻¹ of the crop's middle), frame pixels;
  landmark jitter: the mean of the eye centres and mouth corners of detected (not bridged)
  faces; latent jitter: ``w`` (the smoothed, unedited code).

Frames without a face (or without a rendered face) get a row with ``face`` False and no
metrics; they still enter the whole-frame warping error.
"""

from __future__ import annotations

import time
from typing import Any

import cv2
import numpy as np

from vidinv.frame import Frame
from vidinv.metrics.identity import (
    IdentityEmbedder,
    cosine_similarity,
    distance_similarity,
    euclidean_distance,
    same_person,
)
from vidinv.metrics.image import (
    as_uint8_rgb,
    crop_scores,
    frame_scores,
    mean_or_none,
    mean_psnr,
    psnr_of_mean_mse,
    resize_to,
)
from vidinv.metrics.lpips import LpipsMetric
from vidinv.metrics.temporal import LatentJitter, WarpErrorMeter, tg_id, tl_id, track_jitter

#: Per-frame CSV columns, in order.
FRAME_COLUMNS = (
    "frame", "face", "crop_ssim", "crop_psnr", "crop_mse", "crop_mse_pm1", "lpips",
    "id_distance", "id_same", "id_similarity", "id_cosine", "frame_ssim", "frame_psnr",
    "frame_mse", "warp_error", "warp_error_face", "warp_error_source", "warp_error_face_source",
    "latent_step",
)


def _crop_region(frame: Frame, size: tuple[int, int], scale: tuple[float, float],
                 ) -> np.ndarray:
    """[h,w] bool: the crop square of ``frame`` at the working size."""
    side = frame.aligned.shape[0]
    frame_from_crop = np.linalg.inv(frame.crop_from_frame)
    corners = np.array([[0, 0, 1], [side, 0, 1], [side, side, 1], [0, side, 1]], np.float64)
    points = (frame_from_crop @ corners.T).T[:, :2] * np.array(scale)
    mask = np.zeros(size, np.uint8)
    cv2.fillConvexPoly(mask, np.round(points - 0.5).astype(np.int32), 1)
    return mask.astype(bool)


class MetricsCollector:
    """``on_frame`` callback: computes the per-frame metrics, then :meth:`summary` the video's.

    Args:
        embedder: identity embedder (None: no ID, TL-ID, TG-ID).
        lpips: an :class:`~vidinv.metrics.lpips.LpipsMetric` or None (LPIPS "n/a").
        warp_max_side: working size of the warping error (longer side, px).
    """

    def __init__(self, embedder: IdentityEmbedder | None = None,
                 lpips: LpipsMetric | None = None, warp_max_side: int = 320) -> None:
        self.embedder = embedder
        self.lpips = lpips
        self.rows: list[dict[str, Any]] = []
        self.source_embeddings: list[np.ndarray | None] = []
        self.output_embeddings: list[np.ndarray | None] = []
        self.crop_centres: dict[int, np.ndarray] = {}
        self.landmark_centres: dict[int, np.ndarray] = {}
        self.warp = WarpErrorMeter(warp_max_side)
        self.latent = LatentJitter()
        self.frame_size: tuple[int, int] | None = None
        self._started = time.monotonic()
        self._expected = 0

    def __call__(self, frame: Frame) -> None:
        if frame.index != self._expected:
            raise ValueError(f"frames must come in order: got {frame.index}, expected "
                             f"{self._expected}")
        self._expected += 1
        original = frame.original
        if original is None:
            raise ValueError("the frame has no original image; run the pipeline built by "
                             "vidinv.pipeline.wiring.build_pipeline")
        output = frame.image
        self.frame_size = (int(output.shape[0]), int(output.shape[1]))
        face = bool(frame.face_found and frame.aligned is not None
                    and frame.rendered is not None and frame.crop_from_frame is not None)
        row: dict[str, Any] = {name: None for name in FRAME_COLUMNS}
        row["frame"], row["face"] = frame.index, face

        regions = {}
        if face:
            height, width = output.shape[:2]
            size = self.warp.size_for(height, width)
            regions["face"] = _crop_region(frame, size, (size[1] / width, size[0] / height))
        warp = self.warp.update(original, output, regions)
        if warp is not None:
            row["warp_error"] = warp["frame"].error
            row["warp_error_source"] = warp["frame"].source_error
            if "face" in warp:
                row["warp_error_face"] = warp["face"].error
                row["warp_error_face_source"] = warp["face"].source_error

        source_embedding = output_embedding = None
        if face:
            aligned, rendered = frame.aligned, as_uint8_rgb(frame.rendered)
            crop = crop_scores(aligned, rendered)
            row.update(crop_ssim=crop.ssim, crop_psnr=crop.psnr, crop_mse=crop.mse,
                       crop_mse_pm1=crop.mse_pm1)
            if self.lpips is not None:
                row["lpips"] = self.lpips(resize_to(aligned, rendered.shape[0]), rendered)
            if self.embedder is not None:
                source_embedding = self.embedder.embed(aligned, aligned=True)
                output_embedding = self.embedder.embed(rendered, aligned=True)
                distance = euclidean_distance(output_embedding, source_embedding)
                row["id_distance"] = distance
                row["id_same"] = same_person(distance)
                row["id_similarity"] = distance_similarity(distance)
                row["id_cosine"] = cosine_similarity(output_embedding, source_embedding)
            whole = frame_scores(original, output)
            row.update(frame_ssim=whole.ssim, frame_psnr=whole.psnr, frame_mse=whole.mse)
            side = aligned.shape[0]
            centre = np.linalg.inv(frame.crop_from_frame) @ np.array([side / 2, side / 2, 1.0])
            self.crop_centres[frame.index] = centre[:2]
            if frame.landmarks is not None and not frame.bridged:
                lm = frame.landmarks
                self.landmark_centres[frame.index] = np.mean(
                    [lm.eye_left, lm.eye_right, lm.mouth_left, lm.mouth_right], axis=0)
        if frame.w is not None:
            row["latent_step"] = self.latent.update(frame.index, frame.w)
        self.source_embeddings.append(source_embedding)
        self.output_embeddings.append(output_embedding)
        self.rows.append(row)

    def summary(self) -> dict[str, Any]:
        """The video's numbers: means over face frames, temporal metrics, counts."""
        rows = self.rows
        face_rows = [r for r in rows if r["face"]]

        def column(name: str) -> list[float | None]:
            return [r[name] for r in face_rows]

        crop_psnr, crop_inf = mean_psnr(column("crop_psnr"))
        frame_psnr, frame_inf = mean_psnr(column("frame_psnr"))
        distances = [v for v in column("id_distance") if v is not None]
        same = [bool(v) for v in column("id_same") if v is not None]
        return {
            "frames": len(rows),
            "face_frames": len(face_rows),
            "id_frames": len(distances),
            "crop_ssim": mean_or_none(column("crop_ssim")),
            "crop_psnr": crop_psnr,
            "crop_psnr_inf_frames": crop_inf,
            "crop_psnr_of_mean_mse": psnr_of_mean_mse(column("crop_mse")),
            "crop_mse": mean_or_none(column("crop_mse")),
            "crop_mse_pm1": mean_or_none(column("crop_mse_pm1")),
            "lpips": mean_or_none(column("lpips")),
            "id_distance": mean_or_none(distances),
            "id_same": sum(same) / len(same) if same else None,
            "id_similarity": mean_or_none(column("id_similarity")),
            "id_cosine": mean_or_none(column("id_cosine")),
            "frame_ssim": mean_or_none(column("frame_ssim")),
            "frame_psnr": frame_psnr,
            "frame_psnr_inf_frames": frame_inf,
            "frame_mse": mean_or_none(column("frame_mse")),
            "tl_id": tl_id(self.source_embeddings, self.output_embeddings),
            "tg_id": tg_id(self.source_embeddings, self.output_embeddings),
            "tl_id_cosine": tl_id(self.source_embeddings, self.output_embeddings,
                                  similarity="cosine"),
            "tg_id_cosine": tg_id(self.source_embeddings, self.output_embeddings,
                                  similarity="cosine"),
            "warp_error": mean_or_none(r["warp_error"] for r in rows),
            "warp_error_source": mean_or_none(r["warp_error_source"] for r in rows),
            "warp_error_face": mean_or_none(r["warp_error_face"] for r in rows),
            "warp_error_face_source": mean_or_none(r["warp_error_face_source"] for r in rows),
            "crop_jitter": track_jitter(self.crop_centres),
            "landmark_jitter": track_jitter(self.landmark_centres),
            "latent_jitter": self.latent.value,
            "seconds": time.monotonic() - self._started,
        }

