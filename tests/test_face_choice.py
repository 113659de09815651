"""Which face is edited: identities tracked across frames, --face / --face-ref, one crop,
smoothing and paste per face, and the one-line errors of a bad choice.

The end-to-end tests run ``vidinv edit`` on clips of real people made by
:func:`tests.media.make_people_clip` (the astronaut, Grace Hopper and the man of the carphone
clip, moved and crossed on a 480×270 canvas; its docstring says how).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.media import make_people_clip, people_photos
from tests.skips import require
from vidinv.config import ConfigError, PipelineConfig
from vidinv.face.errors import FaceChoiceError, FaceReferenceError
from vidinv.face.identities import (
    FaceChoice,
    FaceSelector,
    IdentityTracker,
    parse_face_choice,
    reference_descriptor,
)
from vidinv.face.smoothing import CentredGaussianWindow, smooth_each_face_centred
from vidinv.face.track import bridge_gaps
from vidinv.frame import FaceLandmarks, FaceSlot, Frame
from vidinv.stages.model import in_batches


def _face(cx: float, cy: float, size: float = 60.0, person: int = 0) -> FaceLandmarks:
    """A face box of ``size`` at (cx, cy); ``score`` carries who it is (for the fake
    describer)."""
    h = size / 2
    eye_y, mouth_y = cy - 0.1 * size, cy + 0.25 * size
    points = np.array([[cx - 0.2 * size, eye_y], [cx + 0.2 * size, eye_y],
                       [cx - 0.15 * size, mouth_y], [cx + 0.15 * size, mouth_y]])
    return FaceLandmarks(eye_left=points[0], eye_right=points[1], mouth_left=points[2],
                         mouth_right=points[3], points=points,
                         box=(cx - h, cy - h, cx + h, cy + h), backend="test",
                         score=float(person))


class _PersonDescriber:
    """A stand-in for dlib's descriptor: one-hot of the person a test face belongs to (far
    apart for different people, 0 for the same), and a count of the calls."""

    def __init__(self) -> None:
        self.calls = 0

    def describe(self, image, face: FaceLandmarks) -> np.ndarray:
        self.calls += 1
        vector = np.zeros(8)
        vector[int(face.score)] = 1.0
        return vector


def _frame(index: int, faces: list[FaceLandmarks]) -> Frame:
    return Frame(index=index, image=np.zeros((8, 8, 3), np.uint8), faces=faces,
                 face_found=bool(faces))


# --- the tracker -------------------------------------------------------------------------------


def test_identities_survive_a_crossing_and_a_return():
    # person 0 walks right, person 1 walks left; 1 is hidden behind 0 at frames 18-22, and
    # person 0 leaves the frame at 30-44 and comes back at the far right
    describer = _PersonDescriber()
    tracker = IdentityTracker(describer)
    seen: dict[int, set[int]] = {0: set(), 1: set()}
    for k in range(60):
        faces = []
        if not 30 <= k < 45:
            x0 = 40 + 8 * k if k < 30 else 400
            faces.append(_face(x0, 100, person=0))
        if not 18 <= k <= 22:
            faces.append(_face(360 - 8 * k, 110, person=1))
        for identity, face in tracker.update(k, None, faces):
            seen[int(face.score)].add(identity)
    assert seen[0] == {0} and seen[1] == {1}
    assert describer.calls < 60 * 2 / 3  # described now and then, not every frame


def test_without_descriptors_a_returning_face_is_a_new_identity():
    tracker = IdentityTracker(None)
    first = tracker.update(0, None, [_face(100, 100)])[0][0]
    for k in range(1, 20):
        tracker.update(k, None, [])
    assert tracker.update(20, None, [_face(100, 100)])[0][0] != first


def test_index_choice_counts_from_the_left_and_stays_with_the_person():
    tracker = IdentityTracker(_PersonDescriber())
    selector = FaceSelector(FaceChoice("index", index=1), tracker)
    for k in range(40):  # person 1 starts on the right and walks to the left of person 0
        faces = [_face(100 + 4 * k, 100, person=0), _face(300 - 6 * k, 140, person=1)]
        chosen = selector.choose(k, tracker.update(k, None, faces))
        assert [int(face.score) for _, face in chosen] == [1]


def test_an_index_beyond_the_faces_says_how_many_and_where():
    tracker = IdentityTracker(None)
    selector = FaceSelector(FaceChoice("index", index=3), tracker)
    assert selector.choose(0, tracker.update(0, None, [])) == []
    faces = [_face(410, 100), _face(120, 100)]
    with pytest.raises(FaceChoiceError, match=r"found 2 faces at x≈120 and x≈410 in frame 7"):
        selector.choose(7, tracker.update(1, None, faces))


def test_reference_choice_picks_the_nearest_descriptor_and_rechecks():
    describer = _PersonDescriber()
    tracker = IdentityTracker(describer)
    reference = describer.describe(None, _face(0, 0, person=2))
    selector = FaceSelector(FaceChoice("reference", reference=reference), tracker)
    chosen = selector.choose(0, tracker.update(0, None, [_face(100, 100, person=1),
                                                          _face(300, 100, person=2)]))
    assert [int(f.score) for _, f in chosen] == [2]
    # person 2 gone, then back on the other side: chosen again, nobody else meanwhile
    for k in range(1, 15):
        assert selector.choose(k, tracker.update(k, None, [_face(100, 100, person=1)])) == []
    selector.check_found()  # she was found
    chosen = selector.choose(15, tracker.update(15, None, [_face(100, 100, person=1),
                                                            _face(30, 200, person=2)]))
    assert [int(f.score) for _, f in chosen] == [2]


def test_a_reference_nobody_matches_is_an_error_at_the_end():
    describer = _PersonDescriber()
    tracker = IdentityTracker(describer)
    reference = describer.describe(None, _face(0, 0, person=5))
    selector = FaceSelector(FaceChoice("reference", reference=reference), tracker)
    for k in range(5):
        assert selector.choose(k, tracker.update(k, None, [_face(100, 100, person=1)])) == []
    with pytest.raises(FaceChoiceError, match="none of the 1 faces"):
        selector.check_found()


# --- per-face streaming: gaps, smoothing, batches ------------------------------------------------


def _slots_frame(index: int, identities: list[int]) -> Frame:
    from vidinv.face.align import quad_from_landmarks

    frame = Frame(index=index, image=np.zeros((8, 8, 3), np.uint8))
    frame.slots = [FaceSlot(identity=i, landmarks=_face(100 * i + 3 * index, 100),
                            crop_quad=quad_from_landmarks(_face(100 * i + 3 * index, 100)))
                   for i in identities]
    frame.face_found = bool(frame.slots)
    return frame


def test_gaps_are_bridged_per_face():
    # face 0 is missing at 3-4 (bridged), face 1 at 2-7 (too long for max_gap 3)
    frames = [_slots_frame(k, [i for i in (0, 1) if not ((i == 0 and k in (3, 4))
                                                          or (i == 1 and 2 <= k <= 7))])
              for k in range(10)]
    out = list(bridge_gaps(iter(frames), 3))
    assert [f.index for f in out] == list(range(10))
    for k in (3, 4):
        (slot,) = [s for s in out[k].slots if s.identity == 0]
        assert slot.bridged
        np.testing.assert_allclose(slot.crop_quad.c, _slots_frame(k, [0]).slots[0].crop_quad.c)
    assert all(1 not in [s.identity for s in out[k].slots] for k in range(2, 8))


def test_each_face_is_smoothed_on_its_own():
    # two faces in alternating frames must not be smoothed into each other
    frames = [_slots_frame(k, [0, 1]) for k in range(12)]
    for frame in frames:
        for slot in frame.slots:
            slot.w = np.full(3, float(slot.identity * 100 + frame.index))

    out = list(smooth_each_face_centred(
        iter(frames), lambda f: [(s, s.w) for s in f.slots],
        lambda v: CentredGaussianWindow(np.full(v.shape, 1.0)),
        lambda slot, v: setattr(slot, "w", v)))
    assert [f.index for f in out] == list(range(12))
    for frame in out[3:-3]:  # a linear ramp is its own centred Gaussian average
        for slot in frame.slots:
            np.testing.assert_allclose(slot.w, slot.identity * 100 + frame.index)


def test_batches_hold_the_faces_of_several_frames():
    frames = [_slots_frame(0, [0, 1]), _slots_frame(1, []), _slots_frame(2, [0, 1, 2]),
              _slots_frame(3, [0])]
    for frame in frames:
        for slot in frame.slots:
            slot.aligned = np.zeros(1)
    groups = list(in_batches(iter(frames), 4, lambda s: s.aligned is not None))
    assert [len(wanted) for _, wanted in groups] == [4, 2]
    assert [f.index for group, _ in groups for f in group] == [0, 1, 2, 3]
    # frame 2's last face is in the second call: the frame waits for it
    assert [f.index for f in groups[0][0]] == [0, 1]


# --- settings and one-line errors --------------------------------------------------------------


def test_face_setting_values():
    assert PipelineConfig().face.select == "largest"
    assert PipelineConfig().with_overrides(["face.select=2"]).face.select == "2"
    for bad in ("second", "-1", "1.5"):
        with pytest.raises(ConfigError, match="face.select"):
            PipelineConfig().with_overrides([f"face.select={bad}"])
    assert parse_face_choice("all").mode == "all"
    assert parse_face_choice("1").index == 1
    with pytest.raises(FaceChoiceError, match="--face 'left'"):
        parse_face_choice("left")


def test_reference_photo_errors(tmp_path: Path):
    require("mediapipe")
    import cv2

    photos = people_photos()
    with pytest.raises(FaceReferenceError, match="no such file"):
        reference_descriptor(tmp_path / "missing.jpg")
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"not a picture")
    with pytest.raises(FaceReferenceError, match="not a picture"):
        reference_descriptor(broken)
    flat = tmp_path / "flat.png"
    cv2.imwrite(str(flat), np.full((200, 200, 3), 128, np.uint8))
    with pytest.raises(FaceReferenceError, match="no face found"):
        reference_descriptor(flat)
    pair = tmp_path / "pair.png"
    side_by_side = np.concatenate([cv2.resize(photos["astronaut"], (300, 300)),
                                   cv2.resize(photos["hopper"], (256, 300))], axis=1)
    cv2.imwrite(str(pair), cv2.cvtColor(side_by_side, cv2.COLOR_RGB2BGR))
    with pytest.raises(FaceReferenceError, match="2 faces found"):
        reference_descriptor(pair)


# --- end to end on clips of real people --------------------------------------------------------


@pytest.fixture(scope="module")
def crossing(tmp_path_factory):
    require("mediapipe")
    folder = tmp_path_factory.mktemp("people")
    clip = make_people_clip(folder / "crossing.mp4", "crossing")
    import cv2

    for name, photo in people_photos().items():
        cv2.imwrite(str(folder / f"{name}.png"), cv2.cvtColor(photo, cv2.COLOR_RGB2BGR))
    return clip


@pytest.fixture(scope="module")
def three(crossing):
    return make_people_clip(crossing.path.with_name("three.mp4"), "three")


def _rewritten(clip) -> np.ndarray:
    """The clip's frames as the pipeline's writer gives them back unedited."""
    from tests.media import real_clip_head

    again = real_clip_head(clip.path.with_name(f"{clip.path.stem}_rewritten.mp4"), 10_000,
                           crf=0, source=clip.path)
    return _decode(again)


def _vidinv(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidinv.cli", *args], capture_output=True,
                          text=True, timeout=900)


def _decode(path: Path) -> np.ndarray:
    import av

    with av.open(str(path)) as container:
        return np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)]
                        ).astype(np.int16)


#: Mean |output − source| over a face box: at most UNCHANGED where the face is not edited, at
#: least EDITED where it is. ``source`` is the clip written again as the pipeline writes it
#: (losslessly, --crf 0), so what the codec does to the pixels is the same on both sides (4:2:0
#: chroma alone moves them ~1.3 levels on these faces). An edited face — smile 3 of the
#: embedded model on the astronaut, whom it does not know — changes by 2.45 (its first frames)
#: to 3.6 levels since the model's smile scale is calibrated to 1/2 (it was 2/3).
UNCHANGED, EDITED = 0.25, 2.0


@pytest.fixture(scope="module")
def source(crossing):
    return _rewritten(crossing)


def _face_change(clip, source, output, name: str, k: int) -> float | None:
    """Mean |output − source| over the part of ``name``'s face box that shows in frame k."""
    x0, y0, x1, y1 = np.clip(clip.faces[name][k], 0, [480, 270, 480, 270])
    shown = clip.masks(name, k)
    box = np.zeros_like(shown)
    box[y0:y1, x0:x1] = True
    area = box & shown
    if area.sum() < 100:
        return None
    return float(np.abs(output[k] - source[k]).mean(axis=-1)[area].mean())


#: These tests run with the defaults (occlusion on, a fade of 5 frames): each face fades on its
#: own, a face that leaves through the frame's border or goes behind someone does not fade
#: (MaskEdit), and the crop's padding beyond the border is never taken for a cover.


def _edit(clip, *choice: str) -> np.ndarray:
    output = clip.path.with_name(f"{clip.path.stem}_{'_'.join(choice).replace('/', '')}.mp4")
    result = _vidinv("edit", str(clip.path), "--attr", "smile=3", "--crf", "0", "--quiet",
                     "-o", str(output), *choice)
    assert result.returncode == 0, result.stderr
    return _decode(output)


def test_face_ref_edits_only_that_person(crossing, source):
    output = _edit(crossing, "--face-ref", str(crossing.path.with_name("astronaut.png")))
    shown = np.flatnonzero(crossing.visible["astronaut"])
    edited = [_face_change(crossing, source, output, "astronaut", k) > EDITED for k in shown]
    assert np.mean(edited) >= 0.98
    for k in range(len(source)):
        change = _face_change(crossing, source, output, "carphone", k)
        assert change is None or change <= UNCHANGED, (k, change)


def test_face_ref_finds_the_person_again_when_she_comes_back(three):
    # the astronaut walks out of the left edge (frames ~4-45) and back in; of three people
    # only she is edited, before she leaves and after she is back
    source = _rewritten(three)
    output = _edit(three, "--face-ref", str(three.path.with_name("astronaut.png")))
    shown = np.flatnonzero(three.visible["astronaut"])
    assert shown.min() < 4 and shown.max() > 45
    edited = [_face_change(three, source, output, "astronaut", k) > EDITED for k in shown]
    assert np.mean(edited) >= 0.98
    for name in ("hopper", "carphone"):
        for k in range(len(source)):
            change = _face_change(three, source, output, name, k)
            assert change is None or change <= UNCHANGED, (name, k, change)


def test_face_all_edits_everyone_and_an_index_stays_with_its_person(crossing, source):
    everyone = _edit(crossing, "--face", "all")
    for name in crossing.people:
        shown = np.flatnonzero(crossing.visible[name])
        edited = [_face_change(crossing, source, everyone, name, k) > EDITED for k in shown]
        assert np.mean(edited) >= 0.98, name
    # at frame 0 the man on the phone is the second from the left; he stays chosen after
    # he has walked behind the astronaut to the left of her
    second = _edit(crossing, "--face", "1")
    shown = np.flatnonzero(crossing.visible["carphone"])
    assert shown.min() < 20 and shown.max() > 40
    edited = [_face_change(crossing, source, second, "carphone", k) > EDITED for k in shown]
    assert np.mean(edited) >= 0.98
    for k in range(len(source)):  # she is left alone, also while he walks behind her
        change = _face_change(crossing, source, second, "astronaut", k)
        assert change is None or change <= UNCHANGED, (k, change)


def test_bad_face_choices_are_one_line_errors(crossing, tmp_path):
    output = tmp_path / "out.mp4"
    result = _vidinv("edit", str(crossing.path), "--attr", "smile", "--face", "3", "-o",
                     str(output))
    assert result.returncode == 2 and not output.exists()
    assert result.stderr.strip().count("\n") == 0
    assert "found 2 faces at x≈" in result.stderr and "in frame 0" in result.stderr
    result = _vidinv("edit", str(crossing.path), "--attr", "smile", "--face", "left", "-o",
                     str(output))
    assert result.returncode == 2 and "face.select" in result.stderr and not output.exists()
    result = _vidinv("edit", str(crossing.path), "--attr", "smile", "--face-ref",
                     str(tmp_path / "nobody.jpg"), "-o", str(output))
    assert result.returncode == 2 and "no such file" in result.stderr and not output.exists()
    # Grace Hopper is not in the crossing clip
    result = _vidinv("edit", str(crossing.path), "--attr", "smile", "--face-ref",
                     str(crossing.path.with_name("hopper.png")), "-o", str(output))
    assert result.returncode == 2 and not output.exists()
    assert "none of the 2 faces" in result.stderr, result.stderr


def test_personalize_takes_only_the_chosen_persons_crops(crossing):
    from vidinv.face.identities import FaceDescriber
    from vidinv.face.landmarks import landmarks_from_points
    from vidinv.personalize.data import collect_faces

    photos = crossing.path.parent
    choice = parse_face_choice("largest", str(photos / "carphone.png"))
    faces = collect_faces(crossing.path, 128, choice=choice)

    def showing(k: int) -> float:  # the share of his face box not behind the astronaut
        x0, y0, x1, y1 = crossing.faces["carphone"][k]
        return float(crossing.masks("carphone", k)[y0:y1, x0:x1].mean())

    frames = range(len(crossing.visible["carphone"]))
    behind = [k for k in frames if showing(k) < 0.05]
    assert behind and not set(behind) & set(faces.indices.tolist())
    assert len(faces.indices) >= 0.9 * sum(showing(k) >= 0.5 for k in frames)
    describer = FaceDescriber()
    him = reference_descriptor(photos / "carphone.png")
    her = reference_descriptor(photos / "astronaut.png")
    for crop, points, k in list(zip(faces.crops, faces.points, faces.indices,
                                    strict=True))[::3]:
        if showing(k) >= 0.5:
            found = describer.describe(crop, landmarks_from_points(points, "mediapipe"))
            assert np.linalg.norm(found - him) < np.linalg.norm(found - her), k


def test_personalize_face_choice_errors(crossing, tmp_path):
    result = _vidinv("personalize", str(crossing.path), "-o", str(tmp_path / "model"),
                     "--face", "all")
    assert result.returncode == 2 and "learns one person" in result.stderr
    assert not (tmp_path / "model").exists()
    flat = tmp_path / "flat.png"
    import cv2

    cv2.imwrite(str(flat), np.full((100, 100, 3), 90, np.uint8))
    result = _vidinv("personalize", str(crossing.path), "-o", str(tmp_path / "model"),
                     "--face-ref", str(flat))
    assert result.returncode == 2 and "no face found in the photo" in result.stderr
    assert not (tmp_path / "model").exists()
