"""The model folder: its files, loading and saving it, its fingerprint and engine cache folder.

A model folder is what ``--model`` names and what ``models assemble``, ``personalize`` and the
training commands write::

    generator.safetensors     the StyleGAN2 generator (native format, latent_avg included)
    encoder.safetensors       the Feature-Style Encoder that fits it
    directions/NAME.safetensors   edit directions (optional)
    MODEL_CARD.md             where the weights came from and what was checked (optional)
    mouth_inside.png          the person's own open mouth (teeth), from a frame of the clip a
                              personal model was built from, where one shows them (optional)
    evaluation.json           a personal model's build summary (optional)
    vidinv-model.json         the manifest: this folder was written by vidinv, and its files

The manifest is what makes a folder *recognisably vidinv's*: ``models assemble --force`` (and
any other command that replaces a model folder) replaces only a folder that has one and holds
nothing but the files it lists, directions, and vidinv's own work folders
(:func:`replaceable_model_folder`); a folder with anything else in it is refused, so a user's
thesis and photos are never taken for an old model.

A training run folder holds the network it trains under the same file name, beside
``training_state.safetensors`` (optimisers, step) to resume from.

This module is the one place these names are written, as diffusers' ``from_pretrained`` /
``save_pretrained`` own theirs. The engines made from a bundle (backend, export, cache,
TensorRT profiles) are :mod:`vidinv.engines`' business; here only their cache folder is chosen
(per fingerprint, under the user cache).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from vidinv.errors import CheckpointError, InputFileError
from vidinv.models import FEATURE_INDEX

if TYPE_CHECKING:
    from vidinv.models.encoder import FeatureStyleEncoder
    from vidinv.models.stylegan2 import StyleGAN2Generator

GENERATOR_FILE = "generator.safetensors"
ENCODER_FILE = "encoder.safetensors"
DIRECTIONS_FOLDER = "directions"
MODEL_CARD_FILE = "MODEL_CARD.md"
EVALUATION_FILE = "evaluation.json"
MOUTH_INSIDE_FILE = "mouth_inside.png"
#: The largest side a stored mouth inside may have (a 1024-px crop's mouth is ~250 px wide).
MOUTH_INSIDE_MAX_SIDE = 512
#: Beside a training run's network: what resuming it needs (optimisers, step, EMA).
TRAINING_STATE_FILE = "training_state.safetensors"
#: The manifest every model folder vidinv writes carries (see the module docstring).
MANIFEST_FILE = "vidinv-model.json"
MANIFEST_KIND = "vidinv model folder"
#: ``personalize``'s resumable work folder inside the model folder it builds.
PERSONALIZE_WORK_FOLDER = ".personalize"

#: The embedded default model, shipped inside the package (see MODEL_CARD.md there).
DEFAULT_MODEL_FOLDER = Path(__file__).resolve().parent.parent / "assets" / "default_model"


@dataclass
class ModelBundle:
    """A generator and its encoder (and the folder they came from)."""

    generator: StyleGAN2Generator
    encoder: FeatureStyleEncoder
    folder: Path
    k: int = FEATURE_INDEX
    #: [h,w,3] uint8 RGB: the person's own open mouth (:data:`MOUTH_INSIDE_FILE`), or None.
    mouth_inside: Any = None

    @property
    def crop_size(self) -> int:
        """Side of the aligned crop the encoder takes."""
        return self.encoder.input_size

    @property
    def directions_folder(self) -> Path:
        return self.folder / DIRECTIONS_FOLDER

    def fingerprint(self) -> str:
        """sha256 (16 hex) of the two weight files: the key of cached ONNX files and engines."""
        return folder_fingerprint(self.folder)


def folder_fingerprint(folder: str | Path) -> str:
    """sha256 (16 hex) of a model folder's generator and encoder files."""
    digest = hashlib.sha256()
    for name in (GENERATOR_FILE, ENCODER_FILE):
        with (Path(folder) / name).open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()[:16]


def direction_file(folder: str | Path, name: str) -> Path:
    """Where a model folder keeps the direction (or direction set) called ``name``."""
    return Path(folder) / DIRECTIONS_FOLDER / f"{name}.safetensors"


def write_manifest(folder: str | Path) -> Path:
    """Write ``folder``'s manifest (atomically): the marker that vidinv wrote this folder, the
    vidinv version, and every file now in it (relative paths; work folders left out)."""
    from vidinv import __version__
    from vidinv.io_safety import write_atomically

    folder = Path(folder)
    files = sorted(
        path.relative_to(folder).as_posix() for path in folder.rglob("*")
        if path.is_file() and not path.is_symlink() and path.name != MANIFEST_FILE
        and PERSONALIZE_WORK_FOLDER not in path.relative_to(folder).parts)
    write_atomically(folder / MANIFEST_FILE, json.dumps(
        {"kind": MANIFEST_KIND, "vidinv_version": __version__, "files": files}, indent=2) + "\n")
    return folder / MANIFEST_FILE


def _manifest_files(folder: Path) -> set[str] | None:
    """The files ``folder``'s manifest lists, or None when it has no valid manifest."""
    path = folder / MANIFEST_FILE
    if path.is_symlink() or not path.is_file() or path.stat().st_size > 1 << 20:
        return None
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError, RecursionError):
        return None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        return None
    files = manifest.get("files")
    if not isinstance(files, list) or not all(isinstance(name, str) for name in files):
        return None
    return set(files)


def replaceable_model_folder(folder: str | Path) -> str | None:
    """None when ``folder`` may be replaced as an old model folder, else why not (a phrase).

    Replaceable: a real folder (not a symlink) that vidinv wrote (it has the manifest) and
    that holds nothing but the manifest's files, any ``directions/*.safetensors`` and
    ``personalize``'s work folder; or an empty folder. Anything else (another file, a
    subfolder, a symlink) means the folder is the user's.
    """
    folder = Path(folder)
    if folder.is_symlink():
        return "is a symbolic link (give the folder it points to, or a new name)"
    if not folder.is_dir():
        return "is not a folder"
    try:
        entries = list(folder.iterdir())
    except OSError as error:
        return f"cannot be listed ({error.strerror})"
    if not entries:
        return None
    listed = _manifest_files(folder)
    if listed is None:
        return (f"has no {MANIFEST_FILE}, so it is not a model folder vidinv wrote (it holds "
                f"{len(entries)} entries, e.g. {sorted(e.name for e in entries)[0]!r})")
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        name = relative.as_posix()
        if PERSONALIZE_WORK_FOLDER == relative.parts[0] and not path.is_symlink():
            continue
        if path.is_symlink():
            return f"holds a symbolic link, {name}, that vidinv did not write"
        if path.is_dir():
            if name == DIRECTIONS_FOLDER:
                continue
            return f"holds a folder, {name}, that vidinv did not write"
        if name == MANIFEST_FILE or name in listed:
            continue
        if relative.parent.as_posix() == DIRECTIONS_FOLDER and path.suffix == ".safetensors":
            continue
        return f"holds {name}, which its {MANIFEST_FILE} does not list"
    return None


def is_model_folder(folder: str | Path) -> bool:
    """Whether ``folder`` holds a generator and an encoder file."""
    folder = Path(folder)
    return (folder / GENERATOR_FILE).is_file() and (folder / ENCODER_FILE).is_file()


def resolve_model_folder(name_or_path: str | None) -> Path:
    """The model folder for ``--model``: a path, or None for the embedded default model."""
    if name_or_path is None:
        if not (DEFAULT_MODEL_FOLDER / GENERATOR_FILE).is_file():
            raise InputFileError("this install has no embedded default model; pass --model "
                                 f"FOLDER (a folder with {GENERATOR_FILE} and {ENCODER_FILE})")
        return DEFAULT_MODEL_FOLDER
    return Path(name_or_path)


def load_model_bundle(folder: str | Path) -> ModelBundle:
    """Load ``folder``'s generator and encoder (eval, no grad); they must fit together."""
    from vidinv.models.encoder import check_encoder_matches
    from vidinv.models.encoder_io import load_encoder
    from vidinv.models.generator_io import load_generator

    folder = Path(folder)
    if not folder.is_dir():
        raise InputFileError(f"{folder}: no such model folder; pass a folder with "
                             f"{GENERATOR_FILE} and {ENCODER_FILE} (see `vidinv models list`)")
    for name in (GENERATOR_FILE, ENCODER_FILE):
        if not (folder / name).is_file():
            raise InputFileError(f"{folder}: has no {name}; a model folder needs "
                                 f"{GENERATOR_FILE} and {ENCODER_FILE}")
    generator = load_generator(folder / GENERATOR_FILE)
    encoder = load_encoder(folder / ENCODER_FILE)
    try:
        check_encoder_matches(encoder, generator, FEATURE_INDEX)
    except ValueError as error:
        raise CheckpointError(f"{folder}: the encoder does not fit the generator ({error})"
                              ) from None
    return ModelBundle(generator=generator, encoder=encoder, folder=folder,
                       mouth_inside=load_mouth_inside(folder))


def save_mouth_inside(folder: str | Path, image: Any) -> Path:
    """Write the person's own open mouth ``image`` [h,w,3] uint8 RGB into ``folder``
    (atomically, PNG), or with ``image`` None remove one an earlier build left there (a
    ``personalize --restart`` into a kept folder of another clip must not keep that clip's
    teeth); the caller writes the manifest after."""
    import cv2

    from vidinv.io_safety import write_atomically

    if image is None:
        (Path(folder) / MOUTH_INSIDE_FILE).unlink(missing_ok=True)
        return Path(folder) / MOUTH_INSIDE_FILE
    ok, encoded = cv2.imencode(".png", cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    if not ok:
        raise ValueError("the mouth inside could not be encoded as PNG")
    path = Path(folder) / MOUTH_INSIDE_FILE
    write_atomically(path, encoded.tobytes())
    return path


def load_mouth_inside(folder: str | Path) -> Any:
    """[h,w,3] uint8 RGB: ``folder``'s :data:`MOUTH_INSIDE_FILE`, or None when it has none;
    one that is not a small colour PNG is a :class:`CheckpointError` naming the fix."""
    import cv2
    import numpy as np

    path = Path(folder) / MOUTH_INSIDE_FILE
    if not path.is_file():
        return None
    data = np.fromfile(path, np.uint8) if path.stat().st_size <= 4 << 20 else None
    image = None if data is None else cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    if (image is None or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8
            or min(image.shape[:2]) < 2 or max(image.shape[:2]) > MOUTH_INSIDE_MAX_SIDE):
        raise CheckpointError(f"{path}: not a mouth picture vidinv wrote (an 8-bit colour PNG "
                              f"of at most {MOUTH_INSIDE_MAX_SIDE} px); delete it (the teeth "
                              "are then drawn) or build the model again with `vidinv "
                              "personalize`")
    return cv2.cvtColor(image, cv2.COLOR_BGR2RGB)


def save_model_folder(folder: str | Path, generator: StyleGAN2Generator,
                      encoder: FeatureStyleEncoder, *, card: str | None = None,
                      evaluation: Mapping[str, Any] | None = None) -> Path:
    """Write the networks (each file atomically), and the model card and evaluation summary
    when given, into ``folder`` (created if missing), then the manifest. Directions are written
    by their owner, :func:`vidinv.latent.directions.save_directions`, to
    :func:`direction_file` paths; a writer that adds them calls :func:`write_manifest` again."""
    from vidinv.io_safety import write_atomically
    from vidinv.models.encoder_io import save_encoder
    from vidinv.models.generator_io import save_generator

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    save_generator(generator.cpu(), folder / GENERATOR_FILE)
    save_encoder(encoder.cpu(), folder / ENCODER_FILE)
    if evaluation is not None:
        write_atomically(folder / EVALUATION_FILE, json.dumps(evaluation, indent=2))
    if card is not None:
        write_atomically(folder / MODEL_CARD_FILE, card)
    write_manifest(folder)
    return folder


def engine_cache_folder(bundle: ModelBundle) -> Path:
    """Where this model's ONNX files and TensorRT engines are kept: the user cache, per
    fingerprint of the weights (``vidinv engines build`` and ``edit`` both use it)."""
    from vidinv.models.registry import default_cache_dir

    return default_cache_dir() / "engines" / bundle.fingerprint()
