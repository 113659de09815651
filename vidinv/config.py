"""The pipeline's settings: frozen dataclasses, one section per stage group.

A preset (``pipelines/*.toml``) is this structure as TOML; ``vidinv edit --set
section.field=value`` overrides any field, parsed by the field's type. Unknown sections or
fields are errors that list what exists.
"""

from __future__ import annotations

import dataclasses
import math
import re
import tomllib
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vidinv.errors import VidinvError

# --- allowed values: one Literal per kind of setting, the only place they are written ---------
# The settings below are annotated with these; :data:`CHOICES` (what a preset or ``--set`` is
# checked against), the CLI's ``choices=`` and the stages' own checks all read them
# (``typing.get_args(Smoothing)`` is the tuple).

Landmarks = Literal["mediapipe", "dlib"]
#: Which faces are edited (face.select): these words, or a face's index from the left at the
#: first frame with faces (0 = leftmost); face.reference (a photo) picks one person instead.
FaceSelect = Literal["largest", "all"]
Smoothing = Literal["none", "causal", "centred"]
FaceMask = Literal["ellipse", "landmarks"]
ColorMatch = Literal["none", "lab", "rgb"]
#: transfer: the edit moved onto the source's pixels; render: the model's rendering pasted.
PasteMode = Literal["transfer", "render"]
#: The parts of the face an edit can be limited to (``face.region``: one or a comma list);
#: ``face`` is the whole face.
Region = Literal["face", "mouth", "eyes", "brows", "upper", "lower"]
Backend = Literal["torch", "onnx", "tensorrt"]
Precision = Literal["fp32", "fp16"]
#: libx264's presets.
X264Preset = Literal["ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow",
                     "slower", "veryslow", "placebo"]

#: The presets shipped in the package; ``pipelines/`` at the repository's top level holds the
#: user-editable copies (pass one by path: ``--preset pipelines/realtime.toml``).
PRESETS_FOLDER = Path(__file__).resolve().parent / "assets" / "pipelines"


class ConfigError(VidinvError):
    """A preset or an override names an unknown setting or has a bad value."""


@dataclass(frozen=True)
class FaceSettings:
    landmarks: Landmarks = "mediapipe"
    select: str = "largest"             # largest, all, or an index from the left (FaceSelect)
    reference: str = ""                 # a photo of the person to edit (wins over select)
    max_gap: int = 5                    # frames of lost face bridged by interpolation
    crop_smoothing: Smoothing = "centred"
    mask: FaceMask = "ellipse"
    color_match: ColorMatch = "none"
    paste: PasteMode = "transfer"
    region: str = "face"                # where the edit shows: a Region or a comma list of them
    occlusion: bool = True              # keep the source where something covers the face
    fade_frames: int = 5                # the edit fades out/in over this many frames around
    #                                     frames where the face is lost or mostly covered
    key_frames: bool = True             # transfer paste: encode, render and estimate the
    #                                     edit's flow only on key frames, carry it between
    key_motion: float = 0.08            # a key frame when a landmark moved this much in the
    #                                     crop since the last (× the inter-ocular distance)
    key_every: int = 4                  # and at least every this many frames
    symmetric: bool = True              # transfer paste: an edit symmetric by nature (smile,
    #                                     frown, brows, eyes, mouth, pout) moves both sides alike
    actions: bool = True                # transfer paste: an edit of the expression bank moves
    #                                     the face as its action units do, as far as the
    #                                     model's edit goes (else: optical flow E -> R)
    draw: bool = True                   # with actions: draw what they show beyond motion
    #                                     (teeth between parted lips, a smile's folds)


@dataclass(frozen=True)
class LatentSettings:
    smoothing: Smoothing = "centred"
    sigma: float = 1.5                  # centred: Gaussian σ in frames
    alpha: float = 0.5                  # causal: EMA weight of the new frame
    fine_layers_from: int = -1          # ≥ 0: running mean of W+ layers from this index on


@dataclass(frozen=True)
class EngineSettings:
    backend: Backend = "torch"
    device: str | None = None           # cpu, cuda or cuda:N; unset: the backend chooses
    #                                     (TensorRT: cuda)
    precision: Precision | None = None  # unset: fp32 (TensorRT: the spec's, fp16)
    batch_size: int = 4                 # aligned faces per encoder / edit+render call
    spec: str | None = None             # engine spec TOML; unset: the one shipped in the package
    threads: int = 1                    # CPU threads per call while running (torch, ONNX
    #                                     Runtime, OpenCV); 0: the library's default. The stages
    #                                     already run in parallel; on few cores more threads per
    #                                     call fight them (OpenMP spins while it waits)


@dataclass(frozen=True)
class EditSettings:
    """What `edit` and `live` apply when --attr / --strength are not given."""

    attribute: str = ""                 # a direction name of the model, or a direction file
    strength: float = 1.0               # α in w + α·d (a direction acts on its own layers)


@dataclass(frozen=True)
class AdaptSettings:
    check_frames: int = 4               # faces checked for "does the model know this face"; 0 off
    strict: bool = False                # an unknown face is an error instead of a notice
    tune_steps: int = 0                 # generator tuning (PTI) on the clip before editing
    tune_frames: int = 16               # frames spread over the clip that the tuning uses


@dataclass(frozen=True)
class OutputSettings:
    crf: int = 18
    preset: X264Preset = "medium"
    side_by_side: bool = False          # original | edited, twice the width


@dataclass(frozen=True)
class PipelineConfig:
    face: FaceSettings = field(default_factory=FaceSettings)
    latent: LatentSettings = field(default_factory=LatentSettings)
    engine: EngineSettings = field(default_factory=EngineSettings)
    edit: EditSettings = field(default_factory=EditSettings)
    output: OutputSettings = field(default_factory=OutputSettings)
    adapt: AdaptSettings = field(default_factory=AdaptSettings)
    queue_size: int = 4                 # frames between threads
    codec_threads: int = 0              # threads of the video decoder and of x264; 0: one
                                        # on ≤ 2 cores with a fast preset, else FFmpeg's choice

    def with_values(self, values: dict[str, dict[str, Any] | Any]) -> PipelineConfig:
        """A copy with ``{section: {field: value}}`` (and top-level fields) applied."""
        changes: dict[str, Any] = {}
        for name, value in values.items():
            current = getattr(self, name, None)
            if name not in _field_types(PipelineConfig):
                raise ConfigError(f"unknown setting {name!r}; sections and settings: "
                                  f"{', '.join(_field_types(PipelineConfig))}")
            if dataclasses.is_dataclass(current):
                if not isinstance(value, dict):
                    raise ConfigError(f"[{name}] must be a table of settings")
                changes[name] = _replace_section(current, name, value)
            else:
                changes[name] = _coerce(value, _field_types(PipelineConfig)[name], name)
                _check_allowed(name, changes[name])
        return dataclasses.replace(self, **changes)

    def with_overrides(self, assignments: list[str]) -> PipelineConfig:
        """Apply ``section.field=value`` strings (the CLI's ``--set``)."""
        values: dict[str, Any] = {}
        for assignment in assignments:
            key, sep, text = assignment.partition("=")
            if not sep:
                raise ConfigError(f"--set {assignment!r}: write section.field=value")
            section, dot, name = key.strip().partition(".")
            if dot:
                values.setdefault(section, {})[name] = text.strip()
            else:
                values[section] = text.strip()
        return self.with_values(values)


# --- checks: what the code accepts, checked where a value is parsed --------------------------


def _literal_values(kind: Any) -> tuple[str, ...] | None:
    """The strings of a ``Literal`` annotation (``Literal[...] | None`` too), else None."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    return typing.get_args(kind) if typing.get_origin(kind) is Literal else None


def _choices() -> dict[str, tuple[str, ...]]:
    """"section.field" -> the allowed strings, read off the settings' ``Literal`` annotations."""
    found = {}
    for section, section_type in _field_types(PipelineConfig).items():
        fields = (_field_types(section_type) if dataclasses.is_dataclass(section_type)
                  else {"": section_type})
        for name, kind in fields.items():
            values = _literal_values(kind)
            if values is not None:
                found[f"{section}.{name}" if name else section] = values
    return found


#: "section.field" -> (low, high, low included, high included) for numbers; NaN never passes.
RANGES: dict[str, tuple[float, float, bool, bool]] = {
    "face.max_gap": (0, 10_000, True, True),
    "face.fade_frames": (0, 1_000, True, True),
    "face.key_motion": (0, 10, False, True),
    "face.key_every": (1, 1_000, True, True),
    "latent.sigma": (0, 1_000, False, True),
    "latent.alpha": (0, 1, False, True),
    "latent.fine_layers_from": (-1, 63, True, True),
    "engine.batch_size": (1, 1_024, True, True),
    "edit.strength": (-100, 100, True, True),
    "engine.threads": (0, 1_024, True, True),
    "adapt.check_frames": (0, 10_000, True, True),
    "adapt.tune_steps": (0, 100_000, True, True),
    "adapt.tune_frames": (1, 10_000, True, True),
    "output.crf": (0, 51, True, True),
    "queue_size": (1, 1_024, True, True),
    "codec_threads": (0, 1_024, True, True),
}
#: Devices: cpu, cuda or cuda:N (meta, mps, … are not what the engines run on).
_DEVICE = re.compile(r"cpu|cuda(:\d{1,2})?")


def parse_regions(text: str, where: str = "face.region") -> tuple[str, ...]:
    """The regions of a ``face.region`` value (``"mouth,eyes"`` -> ``("mouth", "eyes")``), in
    the order given, without repeats; raises :class:`ConfigError` naming the valid ones."""
    names = tuple(dict.fromkeys(part.strip().lower() for part in str(text).split(",")))
    unknown = [name for name in names if name not in typing.get_args(Region)]
    if unknown or not names:
        raise ConfigError(f"{where} {text!r}: unknown region {', '.join(map(repr, unknown))}; "
                          f"use one or a comma list of: {', '.join(typing.get_args(Region))}")
    return names


def _check_allowed(where: str, value: Any) -> None:
    """Raise :class:`ConfigError` (listing what is allowed) unless ``value`` fits ``where``."""
    if where == "face.region":
        parse_regions(value)
    if where in CHOICES and value not in CHOICES[where]:
        raise ConfigError(f"{where} = {value!r} is not one of: {', '.join(CHOICES[where])}")
    if where == "face.select" and not (value in typing.get_args(FaceSelect)
                                       or re.fullmatch(r"\d{1,3}", str(value))):
        raise ConfigError(f"{where} = {value!r} is not one of: "
                          f"{', '.join(typing.get_args(FaceSelect))}, or an index from the left "
                          "(0, 1, …)")
    if where == "engine.device" and not _DEVICE.fullmatch(str(value)):
        raise ConfigError(f"{where} = {value!r} is not one of: cpu, cuda, cuda:N")
    if where in RANGES and not isinstance(value, bool):
        low, high, low_in, high_in = RANGES[where]
        number = float(value)
        inside = (math.isfinite(number) and (number >= low if low_in else number > low)
                  and (number <= high if high_in else number < high))
        if not inside:
            interval = f"{'[' if low_in else '('}{low:g}, {high:g}{']' if high_in else ')'}"
            raise ConfigError(f"{where} = {value!r} is outside {interval}")


def _field_types(cls: type) -> dict[str, Any]:
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _replace_section(section: Any, section_name: str, values: dict[str, Any]) -> Any:
    types_ = _field_types(type(section))
    changes = {}
    for name, value in values.items():
        if name not in types_:
            raise ConfigError(f"unknown setting {section_name}.{name}; [{section_name}] has "
                              f"{', '.join(types_)}")
        where = f"{section_name}.{name}"
        changes[name] = _coerce(value, types_[name], where)
        _check_allowed(where, changes[name])
    return dataclasses.replace(section, **changes)


def _coerce(value: Any, kind: Any, where: str) -> Any:
    """Parse CLI text (or check a TOML value) as ``kind`` (bool, int, float or str)."""
    if typing.get_origin(kind) in (typing.Union, types.UnionType):
        kind = next(k for k in typing.get_args(kind) if k is not type(None))
    if typing.get_origin(kind) is Literal:
        kind = str  # the allowed values are checked by _check_allowed
    try:
        if kind is bool:
            if isinstance(value, bool):
                return value
            text = str(value).lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError(value)
        if kind is int and isinstance(value, float):
            raise ValueError(value)
        return kind(value)
    except (TypeError, ValueError):
        noun = {int: "a whole number", float: "a number", bool: "true or false",
                str: "a string"}.get(kind, f"a {kind.__name__}")
        raise ConfigError(f"{where} = {value!r} is not {noun}") from None


def load_preset(name_or_path: str) -> PipelineConfig:
    """A preset by name (one shipped in the package) or by ``.toml`` path, over the defaults."""
    path = Path(name_or_path)
    if not path.suffix:
        path = PRESETS_FOLDER / f"{name_or_path}.toml"
    if not path.is_file():
        known = sorted(p.stem for p in PRESETS_FOLDER.glob("*.toml"))
        raise ConfigError(f"no preset {name_or_path!r}; known presets: {', '.join(known)}, "
                          "or pass a .toml path")
    try:
        values = tomllib.loads(path.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"{path}: not valid TOML ({error})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply to be a preset") from None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: cannot be read as a preset ({error})") from None
    return PipelineConfig().with_values(values)


#: "section.field" -> the allowed strings of every setting annotated with a ``Literal`` above.
CHOICES: dict[str, tuple[str, ...]] = _choices()
