"""The FSE paper's video benchmark (003 §5.3, Table 2): RAVDESS talking-face videos.

Protocol as the paper states it: "We sample randomly 120 videos from RAVDESS dataset, perform
the inversion using each method and compute the quantitative metrics" (SSIM, PSNR, MSE, LPIPS,
ID). It says nothing more; the authors' video script (InterDigitalInc/FeatureStyleEncoder,
``video_processing.py``) keeps the first 120 frames of a video (``--max-frames 120`` here),
aligns at the generator's resolution and compares there.

RAVDESS file names are seven two-digit fields, ``MM-VC-EE-II-SS-RR-AA.mp4``:
modality (01 full audio-video, 02 video-only, 03 audio-only — not a video), vocal channel
(01 speech, 02 song), emotion (01 neutral, 02 calm, 03 happy, 04 sad, 05 angry, 06 fearful,
07 disgust, 08 surprised; song has 01–06 only), intensity (01 normal, 02 strong; neutral has no
strong), statement (01, 02), repetition (01, 02), actor (01–24), in folders ``Actor_XX``.
Other files are skipped; so is a file whose ``Actor_XX`` folder names another actor.
Full-AV and video-only files of one recording hold the same picture: only one of them is kept
(the video-only file), unless ``modality`` asks for one kind.
"""

from __future__ import annotations

import logging
import random
import re
from dataclasses import dataclass
from pathlib import Path

from vidinv.errors import InputFileError

log = logging.getLogger(__name__)

_NAME = re.compile(r"^(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d\d)\.mp4$", re.IGNORECASE)
_ACTOR_FOLDER = re.compile(r"^Actor_(\d\d)$", re.IGNORECASE)
EMOTIONS = {1: "neutral", 2: "calm", 3: "happy", 4: "sad", 5: "angry", 6: "fearful",
            7: "disgust", 8: "surprised"}
MODALITIES = {"any": (1, 2), "full-av": (1,), "video-only": (2,)}


@dataclass(frozen=True, order=True)
class RavdessVideo:
    """One RAVDESS video file and the fields of its name."""

    actor: int
    vocal_channel: int
    emotion: int
    intensity: int
    statement: int
    repetition: int
    modality: int
    path: Path

    @property
    def recording(self) -> tuple[int, ...]:
        """The fields that name a recording (all but the modality)."""
        return (self.vocal_channel, self.emotion, self.intensity, self.statement,
                self.repetition, self.actor)

    @property
    def emotion_name(self) -> str:
        return EMOTIONS[self.emotion]

    def meta(self) -> dict[str, object]:
        return {"actor": self.actor, "modality": "full-av" if self.modality == 1 else
                "video-only", "vocal_channel": "speech" if self.vocal_channel == 1 else "song",
                "emotion": self.emotion_name, "intensity": "normal" if self.intensity == 1
                else "strong", "statement": self.statement, "repetition": self.repetition}


def parse_ravdess_name(path: str | Path) -> RavdessVideo | None:
    """The RAVDESS video named by ``path``'s file name, or None if it is not one."""
    path = Path(path)
    match = _NAME.match(path.name)
    if not match:
        return None
    modality, vocal, emotion, intensity, statement, repetition, actor = map(int, match.groups())
    valid = (modality in (1, 2) and vocal in (1, 2) and emotion in EMOTIONS
             and intensity in (1, 2) and statement in (1, 2) and repetition in (1, 2)
             and 1 <= actor <= 24
             and not (emotion == 1 and intensity == 2)  # neutral has no strong intensity
             and not (vocal == 2 and emotion > 6))  # song: neutral … fearful only
    if not valid:
        return None
    folder = _ACTOR_FOLDER.match(path.parent.name)
    if folder and int(folder.group(1)) != actor:
        return None
    return RavdessVideo(actor=actor, vocal_channel=vocal, emotion=emotion, intensity=intensity,
                        statement=statement, repetition=repetition, modality=modality,
                        path=path)


def discover(root: str | Path, modality: str = "any") -> list[RavdessVideo]:
    """Every RAVDESS video under ``root`` (any depth), sorted; others are skipped (logged)."""
    root = Path(root)
    if not root.is_dir():
        raise InputFileError(f"{root}: no such folder; pass the RAVDESS root (the folder with "
                             "Actor_01/ … Actor_24/)")
    if modality not in MODALITIES:
        raise InputFileError(f"unknown modality {modality!r}; use any, full-av or video-only")
    wanted = MODALITIES[modality]
    found: dict[tuple[int, ...], RavdessVideo] = {}
    skipped = 0
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        video = parse_ravdess_name(path)
        if video is None or video.modality not in wanted:
            skipped += path.suffix.lower() in (".mp4", ".avi", ".mov", ".mkv")
            continue
        kept = found.get(video.recording)
        if kept is None or video.modality > kept.modality:  # prefer the video-only file
            found[video.recording] = video
    if skipped:
        log.info("%s: skipped %d video file(s) not named as RAVDESS videos "
                 "(MM-VC-EE-II-SS-RR-AA.mp4 in Actor_AA/)", root, skipped)
    return sorted(found.values())


def sample(videos: list[RavdessVideo], n: int, seed: int = 0) -> list[RavdessVideo]:
    """``n`` videos drawn without replacement by ``random.Random(seed)`` from the sorted list
    (the same files and seed give the same sample), returned sorted; all of them if fewer."""
    ordered = sorted(videos)
    if n >= len(ordered):
        if n > len(ordered):
            log.info("asked for %d videos, %d found: using all", n, len(ordered))
        return ordered
    return sorted(random.Random(seed).sample(ordered, n))


def find_videos(root: str | Path, n: int, seed: int = 0,
                modality: str = "any") -> list[RavdessVideo]:
    """:func:`discover` then :func:`sample`; an error names the naming scheme if none match."""
    videos = discover(root, modality)
    if not videos:
        raise InputFileError(f"{root}: no RAVDESS videos found (files named like "
                             "01-01-03-01-01-01-01.mp4 in Actor_01/ …)")
    return sample(videos, n, seed)
