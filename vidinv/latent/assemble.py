"""Put a generator, an encoder and edit directions together into one checked model folder.

``vidinv models assemble --generator ffhq.pkl --encoder 143_enc.pth --directions smile.pt … -o M``
does, in order:

1. load the generator from any format (NVIDIA ``.pkl``, rosinality ``.pt``, native) and the
   encoder (the official ``143_enc.pth`` or native), giving the encoder the generator's
   ``latent_avg`` (the official encoder file has none);
2. check that the pieces fit, and stop with one line naming the mismatch: the number of W+
   entries (18 for a 1024 px generator: ``2·log2(R) − 2``), the generator's ``latent_avg``
   (present, finite, not zero; a native encoder's own must equal it), the feature tensor at
   k = 5 (channels and 16×16 side, which fixes the encoder's input size: 256 px with the
   official content stride 2 — FFHQ-1024's aligned crop is taken at 256 px and rendered at 1024),
   and each direction's shape against the generator's W+;
3. write the native files (``generator.safetensors``, ``encoder.safetensors``, one
   ``directions/<name>.safetensors`` per direction, stamped with the generator's fingerprint),
   the ``MODEL_CARD.md`` (sources with their sha256, architecture, fingerprints, the checks) —
   into a temporary folder next to the output, load it back as the pipeline will, and only then
   rename it into place. Inputs are only read; an output that would contain an input is refused;
   an existing output is replaced (``force``) only when it is a model folder vidinv wrote (its
   manifest lists everything in it), never a folder of the user's.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import math
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from vidinv.errors import CheckpointError, InputFileError, VidinvError
from vidinv.models.encoder import FEATURE_INDEX, FeatureStyleEncoder
from vidinv.models.stylegan2 import StyleGAN2Generator

log = logging.getLogger(__name__)

#: The official Feature-Style Encoder's input side (configs/001.yaml), for the model card.
OFFICIAL_ENCODER_INPUT = 256


class ModelMismatchError(CheckpointError):
    """The generator, the encoder or a direction do not fit together."""


@dataclass
class AssembledModel:
    """What :func:`assemble_model` wrote."""

    folder: Path
    resolution: int
    n_latent: int
    encoder_input: int
    generator_fingerprint: str
    model_fingerprint: str
    directions: list[str] = field(default_factory=list)


def expected_n_latent(resolution: int) -> int:
    """W+ entries of a StyleGAN2 generator at ``resolution``: 2·log2(R) − 2 (18 at 1024)."""
    return 2 * int(math.log2(resolution)) - 2


def shape_problems(generator: StyleGAN2Generator, encoder: FeatureStyleEncoder,
                   k: int = FEATURE_INDEX) -> list[str]:
    """What does not fit in the shapes alone (no weights read: works on the meta device)."""
    problems = []
    resolution = generator.resolution
    if encoder.n_latent != generator.n_latent:
        wanted = [r for r in (2 ** p for p in range(3, 12))
                  if expected_n_latent(r) == encoder.n_latent]
        made_for = f" (a {wanted[0]} px generator's)" if wanted else ""
        problems.append(f"the encoder predicts {encoder.n_latent} W+ entries{made_for}, the "
                        f"{resolution} px generator takes {generator.n_latent}")
    if encoder.style_dim != generator.style_dim:
        problems.append(f"style size {encoder.style_dim} (encoder) vs {generator.style_dim} "
                        "(generator)")
    try:
        features = tuple(generator.synthesis.feature_shape(k))
    except ValueError as error:
        problems.append(f"the generator has no feature tensor at k={k} ({error})")
    else:
        if encoder.feature_shape != features:
            stride = encoder.config["content_stride"]
            problems.append(
                f"the encoder's feature tensor is {list(encoder.feature_shape)} from a "
                f"{encoder.input_size} px input, the generator's at k={k} is {list(features)} "
                f"(an encoder for it takes {features[1] * 8 * stride} px with content stride "
                f"{stride} and has {features[0]} feature channels)")
    return problems


def check_fit(generator: StyleGAN2Generator, encoder: FeatureStyleEncoder,
              k: int = FEATURE_INDEX) -> None:
    """ModelMismatchError (one line, every mismatch named) unless the encoder fits the generator:
    the shapes (:func:`shape_problems`) and the average latent.

    ``encoder`` must already carry the generator's ``latent_avg`` (or its own, if native).
    """
    problems = shape_problems(generator, encoder, k)
    average = generator.latent_avg
    if not bool(torch.isfinite(average).all()):
        problems.append("the generator's latent_avg has NaN or infinite values")
    elif not bool(average.abs().gt(0).any()):
        problems.append("the generator has no latent_avg (all zeros); use the checkpoint with "
                        "its w_avg (NVIDIA .pkl) or latent_avg (rosinality .pt)")
    elif encoder.style_dim == generator.style_dim and encoder.n_latent == generator.n_latent:
        mean = average.reshape(1, -1).expand_as(encoder.latent_avg)
        if not torch.allclose(encoder.latent_avg, mean, rtol=1e-4, atol=1e-5):
            problems.append("the encoder's latent_avg is not the generator's (was it trained "
                            "with another generator?)")
    if problems:
        raise ModelMismatchError("the pieces do not fit: " + "; ".join(problems))


@contextlib.contextmanager
def _quiet(logger_name: str) -> Iterator[None]:
    logger = logging.getLogger(logger_name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_folder(out: Path, force: bool) -> None:
    """Refuse (one line) an output folder that cannot be written or must not be replaced.

    ``.``, ``..`` (any path ending in them), the current folder or one holding it cannot be
    renamed into place; an existing folder is replaced only with ``force`` and only when it is
    recognisably a model folder vidinv wrote
    (:func:`~vidinv.models.folder.replaceable_model_folder`).
    """
    from vidinv.models.folder import replaceable_model_folder

    if out.name in ("", ".", ".."):
        raise InputFileError(f"-o {out}: name the model folder itself (e.g. -o my-model), not "
                             "the current or a parent folder")
    if Path.cwd().resolve().is_relative_to(out.resolve()):
        raise InputFileError(f"-o {out}: is the current folder or holds it; write the model to "
                             "a new folder")
    if out.is_symlink() or out.exists():
        if not out.is_dir() or out.is_symlink():
            raise InputFileError(f"{out}: exists and is not a folder (a file or a symbolic "
                                 "link); choose a new folder for the model")
        why = replaceable_model_folder(out)
        if why is not None:
            raise InputFileError(f"{out}: {why}; it is left as it is: choose a new folder for "
                                 "the model (or empty it yourself)")
        if any(out.iterdir()) and not force:
            raise VidinvError(f"{out}: exists (a model folder vidinv wrote); pass --force to "
                              "replace it")
    if not out.parent.is_dir():
        raise InputFileError(f"{out.parent}: no such folder for the model")


def _check_inputs(paths: Sequence[Path], out: Path, force: bool) -> None:
    for path in paths:
        if not path.is_file():
            raise InputFileError(f"{path}: no such file")
    if out.name not in ("", ".", ".."):
        resolved = out.resolve()
        for path in paths:
            if path.resolve().is_relative_to(resolved):
                raise InputFileError(f"{out}: holds the input {path}; write the model to "
                                     "another folder")
    check_output_folder(out, force)


def assemble_model(generator_path: str | Path, encoder_path: str | Path, out: str | Path, *,
                   direction_paths: Sequence[str | Path] = (), force: bool = False,
                   k: int = FEATURE_INDEX) -> AssembledModel:
    """Check and convert the pieces into the model folder ``out`` (see the module docstring).

    ``direction_paths``: direction files (e4e/InterFaceGAN ``.pt``/``.npy``, GANSpace, native);
    ``NAME=FILE`` names the direction of a one-direction file (``smile=e4e-interfacegan-smile.pt``).

    Raises InputFileError / CheckpointError for unreadable inputs, ModelMismatchError (naming
    what does not fit) and VidinvError when ``out`` exists without ``force``. Nothing is left
    at ``out`` when it fails.
    """
    from vidinv.io_safety import current_umask, move_folder_into_place, write_atomically
    from vidinv.latent.directions import (
        DirectionError,
        DirectionSet,
        generator_fingerprint,
        load_directions,
        resolve_layers,
        save_directions,
    )
    from vidinv.models.encoder_io import load_encoder
    from vidinv.models.folder import (
        MODEL_CARD_FILE,
        direction_file,
        load_model_bundle,
        save_model_folder,
        write_manifest,
    )
    from vidinv.models.generator_io import load_generator
    from vidinv.models.native import looks_like_safetensors, read_head

    generator_path, encoder_path, out = Path(generator_path), Path(encoder_path), Path(out)
    renames: dict[Path, str] = {}
    paths = []
    for item in direction_paths:
        text = str(item)
        name, sep, rest = text.partition("=")
        if sep and not Path(text).is_file() and name.isidentifier():
            renames[Path(rest)] = name
            paths.append(Path(rest))
        else:
            paths.append(Path(text))
    direction_paths = paths
    _check_inputs([generator_path, encoder_path, *direction_paths], out, force)

    generator = load_generator(generator_path)
    if generator.resolution != 2 ** int(math.log2(generator.resolution)):
        raise ModelMismatchError(f"{generator_path}: resolution {generator.resolution} is not "
                                 "a power of 2")
    native_encoder = looks_like_safetensors(read_head(encoder_path, "encoder"))
    with warnings.catch_warnings(), _quiet("vidinv.models.encoder_io"):
        warnings.simplefilter("ignore")
        encoder = load_encoder(encoder_path)  # "no latent_avg": it is set right here
    if not native_encoder and encoder.n_latent == generator.n_latent \
            and encoder.style_dim == generator.style_dim:
        encoder.set_latent_avg(generator.latent_avg)
    check_fit(generator, encoder, k)

    fingerprint = generator_fingerprint(generator)
    directions = []
    for path in direction_paths:
        try:
            loaded = load_directions(path)
            if path in renames:
                if len(loaded) != 1:
                    raise DirectionError(f"holds {len(loaded)} directions; NAME=FILE renames "
                                         "a file with one")
                loaded.directions[0].name = renames[path]
            for direction in loaded:
                direction.layer_vectors(generator.n_latent, generator.style_dim)
                resolve_layers(direction.layer_slice, generator.n_latent, name=direction.name)
                if direction.generator_fingerprint not in (None, fingerprint):
                    raise DirectionError(f"made for generator {direction.generator_fingerprint}"
                                         f", not this one ({fingerprint})")
        except DirectionError as error:
            message = str(error).removeprefix(f"{path}: ")
            raise ModelMismatchError(f"{path}: does not fit the generator ({message})") from None
        for direction in loaded:
            direction.generator_fingerprint = fingerprint
            direction.meta = {**direction.meta, "assembled_from": path.name}
        directions.append((path, loaded))
    names = [d.name for _, loaded in directions for d in loaded]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ModelMismatchError(f"two directions are called {duplicates[0]!r}; rename one "
                                 "file (the name comes from the file or its contents)")

    import tempfile

    # a new folder of its own (never a leftover, or a user's folder of that name, emptied)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".assembling", dir=out.parent))
    try:
        tmp.chmod(0o777 & ~current_umask())  # mkdtemp's 0700 is not what the folder should keep
        save_model_folder(tmp, generator, encoder)
        for path, loaded in directions:
            stem = loaded[0].name if len(loaded) == 1 else path.stem
            save_directions(direction_file(tmp, stem),
                            DirectionSet(loaded.directions, mean=loaded.mean))
        bundle = load_model_bundle(tmp)  # what the pipeline will do, strictly
        model = AssembledModel(folder=out, resolution=generator.resolution,
                               n_latent=generator.n_latent, encoder_input=encoder.input_size,
                               generator_fingerprint=fingerprint,
                               model_fingerprint=bundle.fingerprint(), directions=names)
        write_atomically(tmp / MODEL_CARD_FILE, _model_card(
            model, generator, encoder, generator_path, encoder_path, directions, native_encoder,
            k))
        write_manifest(tmp)
        check_output_folder(out, force)  # nothing else was put there meanwhile
        move_folder_into_place(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("assembled %s", out)
    return model


def _model_card(model: AssembledModel, generator: StyleGAN2Generator,
                encoder: FeatureStyleEncoder, generator_path: Path, encoder_path: Path,
                directions: list, native_encoder: bool, k: int) -> str:
    config = generator.config
    lines = [
        f"# {model.folder.name}: StyleGAN2 {model.resolution} px + Feature-Style Encoder",
        "",
        f"Assembled by `vidinv models assemble` on "
        f"{datetime.now(UTC).isoformat(timespec='seconds')}.",
        "",
        "## Sources",
        "| part | file | sha256 |",
        "|---|---|---|",
        f"| generator | `{generator_path.name}` | `{_sha256(generator_path)}` |",
        f"| encoder | `{encoder_path.name}` | `{_sha256(encoder_path)}` |",
    ]
    lines += [f"| directions | `{path.name}` | `{_sha256(path)}` |" for path, _ in directions]
    lines += [
        "",
        "The licences are those of the sources (the official FFHQ StyleGAN2 weights: NVIDIA "
        "Source Code License-NC, non-commercial).",
        "",
        "## Architecture",
        f"- generator: {model.resolution} px, {model.n_latent} W+ entries of "
        f"{generator.style_dim}, {config.get('n_mlp')} mapping layers, channel multiplier "
        f"{config.get('channel_multiplier')}, latent_avg from the checkpoint"
        f" (|w̄| = {float(generator.latent_avg.norm()):.3f});",
        f"- encoder: input {encoder.input_size} px (aligned crop; the official encoder takes "
        f"{OFFICIAL_ENCODER_INPUT}), content stride {encoder.config['content_stride']}, "
        f"widths {list(encoder.config['widths'])}, blocks {list(encoder.config['blocks'])}, "
        f"feature tensor {list(encoder.feature_shape)} at k = {k}; latent_avg "
        + ("its own (native file; equal to the generator's)" if native_encoder
           else "the generator's (the official file has none)") + ";",
        f"- generator fingerprint (directions): `{model.generator_fingerprint}`; model "
        f"fingerprint (engine cache): `{model.model_fingerprint}`.",
        "",
        "## Checks passed",
        f"- W+ entries: encoder {encoder.n_latent} = generator {generator.n_latent} "
        f"(2·log2({model.resolution}) − 2);",
        f"- feature tensor at k = {k}: {list(encoder.feature_shape)} on both sides;",
        "- the generator's latent_avg is present and finite;",
        "- every direction fits the generator's W+ and is stamped with its fingerprint.",
        "",
        "## Directions",
    ]
    if directions:
        lines += ["| name | kind | layers | from |", "|---|---|---|---|"]
        for path, loaded in directions:
            for direction in loaded:
                layers = "all" if direction.layers is None else \
                    f"{direction.layers[0]}–{direction.layers[1]}"
                lines.append(f"| {direction.name} | {direction.kind} | {layers} | "
                             f"`{path.name}` |")
    else:
        lines.append("None (add some with `vidinv directions fit` or `models assemble "
                     "--directions`).")
    return "\n".join(lines) + "\n"
