"""Options that several commands share, and what they build: the pipeline options of ``edit``,
``invert``, ``live``, ``engines build`` and ``batch`` (``--model``, ``--preset``, ``--backend``,
``--set``…) and the :class:`~vidinv.config.PipelineConfig` they make, the model they load, the
edits that ``--attr``/``--strength`` ask for, and the Ray options of ``batch`` and ``bench``.
"""

from __future__ import annotations

import argparse

from vidinv.config import CHOICES
from vidinv.errors import VidinvError

#: The options that set one pipeline setting, each with the setting whose allowed values it
#: offers (``--smooth`` sets both smoothings, which allow the same values). Every command's
#: option of these names takes its ``choices`` from here.
SETTING_OF_OPTION: dict[str, str] = {
    "--backend": "engine.backend",
    "--precision": "engine.precision",
    "--smooth": "latent.smoothing",
    "--landmarks": "face.landmarks",
    "--paste": "face.paste",
}


def setting_regions() -> tuple[str, ...]:
    """The region names ``--region`` takes (face.region's)."""
    import typing

    from vidinv.config import Region

    return typing.get_args(Region)


def setting_choices(option: str) -> tuple[str, ...]:
    """The allowed values of the setting that ``option`` (a key of SETTING_OF_OPTION) sets."""
    return CHOICES[SETTING_OF_OPTION[option]]

#: Said in the help of every ``-o`` that replaces a file.
EXISTING_OUTPUT = ("An existing output file is replaced only when the run succeeds (a failed "
                   "or interrupted run leaves it untouched); an output that is one of the "
                   "inputs, or an existing folder, is refused before any work.")


def add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model folder or name (default: the embedded model)")
    parser.add_argument("--preset", help="pipeline preset: offline_hq, realtime or a .toml")
    parser.add_argument("--backend", choices=setting_choices("--backend"))
    parser.add_argument("--device", metavar="{cpu,cuda,cuda:N}",
                        help="default: the backend's choice (cuda for tensorrt)")
    parser.add_argument("--precision", choices=setting_choices("--precision"),
                        help="default: fp32 (tensorrt: the engine spec's, fp16); fp16 needs cuda")
    parser.add_argument("--batch", type=int, help="faces per network call")
    parser.add_argument("--smooth", choices=setting_choices("--smooth"),
                        help="temporal smoothing of the crop and the codes")
    parser.add_argument("--landmarks", choices=setting_choices("--landmarks"))
    parser.add_argument("--paste", choices=setting_choices("--paste"),
                        help="how the edit reaches the frame: transfer (default) moves the "
                        "source's own pixels by the model's edit motion; render pastes the "
                        "model's rendering (for models that reconstruct faces well)")
    parser.add_argument("--region", metavar="REGION[,REGION…]",
                        help="limit the edit to parts of the face: "
                        f"{', '.join(setting_regions())} or a comma list (default: face, the "
                        "whole face); the rest keeps the source's pixels")
    parser.add_argument("--no-occlusion", action="store_true",
                        help="paste over whatever covers the face (by default a hand or an "
                        "object in front of it keeps the source's pixels)")
    add_face_options(parser)
    parser.add_argument("--crf", type=int, help="x264 quality (lower is better)")
    parser.add_argument("--strict", action="store_true",
                        help="stop (exit 2, no output) when the model does not know the face")
    parser.add_argument("--tune", type=int, metavar="N",
                        help="tune the generator on the clip's own frames for N steps first "
                        "(on in the offline_hq preset; --backend torch)")
    parser.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                        help="any pipeline setting (see vidinv/config.py); repeatable")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_face_options(parser: argparse.ArgumentParser) -> None:
    """``--face`` and ``--face-ref``: which faces of the clip are edited."""
    parser.add_argument("--face", metavar="{largest,all,N}",
                        help="which faces to edit: largest (default: the largest face, "
                        "followed), all, or N, the N-th face counted from the left (0 = "
                        "leftmost) in the first frame where faces are found; each face is "
                        "followed as the same person through moves, crossings and exits")
    parser.add_argument("--face-ref", metavar="PHOTO",
                        help="edit only the person in PHOTO (one face): the face most like it "
                        "by dlib's face descriptor, re-checked when that person comes back "
                        "into view")


def setting_overrides(args: argparse.Namespace) -> list[str]:
    """``SECTION.FIELD=VALUE`` overrides for the pipeline options given (``--set`` first); an
    option a command does not have counts as not given."""
    overrides = list(getattr(args, "set", None) or [])
    if getattr(args, "backend", None):
        overrides.append(f"engine.backend={args.backend}")
    if getattr(args, "device", None):
        overrides.append(f"engine.device={args.device}")
    if getattr(args, "precision", None):
        overrides.append(f"engine.precision={args.precision}")
    if getattr(args, "batch", None) is not None:
        overrides.append(f"engine.batch_size={args.batch}")
    if getattr(args, "smooth", None):
        overrides += [f"face.crop_smoothing={args.smooth}", f"latent.smoothing={args.smooth}"]
    if getattr(args, "landmarks", None):
        overrides.append(f"face.landmarks={args.landmarks}")
    if getattr(args, "face", None) is not None:
        overrides.append(f"face.select={args.face}")
    if getattr(args, "face_ref", None):
        overrides.append(f"face.reference={args.face_ref}")
    if getattr(args, "paste", None):
        overrides.append(f"face.paste={args.paste}")
    if getattr(args, "region", None):
        from vidinv.config import parse_regions

        overrides.append(f"face.region={','.join(parse_regions(args.region, '--region'))}")
    if getattr(args, "no_occlusion", False):
        overrides.append("face.occlusion=false")
    if getattr(args, "strict", False):
        overrides.append("adapt.strict=true")
    if getattr(args, "tune", None) is not None:
        overrides.append(f"adapt.tune_steps={args.tune}")
    if getattr(args, "side_by_side", False):
        overrides.append("output.side_by_side=true")
    if getattr(args, "crf", None) is not None:
        overrides.append(f"output.crf={args.crf}")
    return overrides


def pipeline_config(args: argparse.Namespace):
    """The :class:`~vidinv.config.PipelineConfig` of ``--preset`` with the options given; a bad
    ``--face`` or ``--face-ref`` is a one-line error here, before any work."""
    from vidinv.config import PipelineConfig, load_preset

    preset = getattr(args, "preset", None)  # `ui` has the face options only
    config = load_preset(preset) if preset else PipelineConfig()
    config = config.with_overrides(setting_overrides(args))
    check_face_choice(config)
    return config


def check_face_choice(config) -> None:
    """Raise the one-line error of a bad face choice (a --face-ref photo without exactly one
    face, or one that cannot be read); the photo's descriptor is cached for the run."""
    if config.face.reference or config.face.select != "largest":
        from vidinv.pipeline.wiring import face_choice

        face_choice(config)


def load_bundle(args: argparse.Namespace):
    """The model of ``--model`` (default: the embedded one)."""
    from vidinv.models.folder import load_model_bundle, resolve_model_folder

    return load_model_bundle(resolve_model_folder(args.model))


def edits_from_args(args: argparse.Namespace, config) -> dict[str, float]:
    """``{attribute: strength}`` from --attr/--strength, else from the config's [edit]."""
    from vidinv.pipeline.attributes import parse_edits

    strength = args.strength if args.strength is not None else config.edit.strength
    if args.attr:
        return parse_edits(args.attr, strength)
    return {config.edit.attribute: strength} if config.edit.attribute else {}


def add_ray_options(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--workers``, ``--gpus-per-task`` (``batch`` and ``bench ravdess``)."""
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run on Ray (pip install 'vidinv[ray]'): a local Ray sized to this "
                             "machine, or ADDRESS: auto (the cluster this machine is in) or "
                             "ray://HOST:PORT")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="Ray workers (default: as many as the CPUs or GPUs allow)")
    parser.add_argument("--gpus-per-task", type=float, default=0.0, metavar="N",
                        help="GPUs each Ray worker holds (with --device cuda)")


def check_ray_options(args: argparse.Namespace) -> None:
    """Refuse --workers without --ray, and counts below their floor; check a Ray address."""
    if args.workers is not None and args.workers < 1:
        raise VidinvError("--workers must be at least 1")
    if args.workers is not None and args.ray is None:
        raise VidinvError("--workers is for --ray; without it the videos run in this process "
                          "one after another")
    if args.gpus_per_task < 0:
        raise VidinvError("--gpus-per-task cannot be negative")
    if args.ray is not None:
        from vidinv.batch.executor import check_address

        check_address(args.ray)
