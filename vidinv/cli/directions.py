"""``vidinv directions fit|list|show``: find, list and inspect edit directions.

This module imports no heavy library at import time (``vidinv --help`` stays fast); the
handlers import torch and the latent code when they run.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from vidinv.cli.options import setting_choices
from vidinv.errors import VidinvError

#: Methods ``directions fit --attr`` knows besides the landmark attributes.
CLOSED_FORM_METHODS = ("sefa", "ganspace")
#: Landmark attributes (kept in step with vidinv.latent.scorers.ATTRIBUTE_SCORERS).
LANDMARK_ATTRIBUTES = ("smile", "mouth_open", "eyes_open", "yaw")


def _parse_layers(text: str | None) -> range | None:
    """'FIRST-LAST' (inclusive) or 'LAYER' -> a range; None -> None."""
    if text is None:
        return None
    try:
        parts = [int(p) for p in text.split("-")]
    except ValueError:
        parts = []
    if len(parts) not in (1, 2) or parts[0] < 0 or parts[-1] < parts[0]:
        raise VidinvError(f"--layers {text!r}: give FIRST-LAST (inclusive, e.g. 0-5) or one layer")
    return range(parts[0], parts[-1] + 1)


def _format_layers(layers: tuple[int, int] | None) -> str:
    if layers is None:
        return "all"
    return f"{layers[0]}" if layers[0] == layers[1] else f"{layers[0]}-{layers[1]}"


def _format_number(value: Any) -> str:
    if isinstance(value, float):
        return "nan" if math.isnan(value) else f"{value:.4g}"
    return str(value)


def _checked(method: Any, *args: Any, **kwargs: Any) -> Any:
    """A closed-form method; its argument errors (k beyond the layer width …) as one line."""
    try:
        return method(*args, **kwargs)
    except ValueError as error:
        raise VidinvError(f"{method.__name__}: {error}") from None


def _fit(args: argparse.Namespace) -> int:
    from vidinv.latent.errors import UnknownAttributeError

    known = (*LANDMARK_ATTRIBUTES, *CLOSED_FORM_METHODS)
    if args.attr not in known:
        raise UnknownAttributeError(f"unknown attribute {args.attr!r}; known: {', '.join(known)}")
    for option, value in (("--samples", args.samples), ("--components", args.components),
                          ("--batch-size", args.batch_size)):
        if value is not None and value < 1:
            raise VidinvError(f"{option} {value}: must be at least 1")
    if not 0 < args.quantile <= 0.5 or not 0 < args.truncation <= 2:
        raise VidinvError("--quantile must be in (0, 0.5] and --truncation in (0, 2]")
    out = Path(args.output)
    if out.exists() and not args.force:
        raise VidinvError(f"{out}: exists; pass --force to overwrite it")
    layers = _parse_layers(args.layers)

    from vidinv.latent.directions import DirectionSet, save_directions
    from vidinv.latent.fit import fit_interfacegan, ganspace_directions, sefa_directions
    from vidinv.models.generator_io import load_generator

    generator = load_generator(args.model, device=args.device)
    if args.attr == "sefa":
        directions = _checked(sefa_directions, generator, layers=layers,
                              k=args.components or 5)
    elif args.attr == "ganspace":
        directions = _checked(ganspace_directions, generator, n_samples=args.samples or 10_000,
                              n_components=args.components or 20, seed=args.seed,
                              truncation=args.truncation)
        if layers is not None:
            directions = DirectionSet(
                [d.with_layers(layers.start, layers.stop - 1) for d in directions],
                mean=directions.mean)
    else:
        from vidinv.latent.scorers import LandmarkScorer

        with LandmarkScorer(args.attr, args.landmarks) as scorer:
            direction = fit_interfacegan(
                generator, scorer, n_samples=args.samples or 2000, seed=args.seed,
                truncation=args.truncation, batch_size=args.batch_size, quantile=args.quantile,
                progress=not args.quiet)
        if layers is not None:
            direction = direction.with_layers(layers.start, layers.stop - 1)
        direction.meta["backend"] = args.landmarks
        directions = DirectionSet([direction])
    save_directions(out, directions)
    first = directions[0]
    print(f"wrote {out}: {len(directions)} {first.kind} direction(s) for generator "
          f"{first.generator_fingerprint}")
    if "accuracy" in first.meta:
        print(f"  held-out accuracy {_format_number(first.meta['accuracy'])} "
              f"({first.meta['n_scored']} of {first.meta['n_samples']} samples scored)")
    return 0


def _direction_line(direction: Any, model_fingerprint: str | None = None) -> str:
    fingerprint = direction.generator_fingerprint or "none (foreign)"
    if model_fingerprint is not None:
        if direction.generator_fingerprint is None:
            fingerprint += ", unverified"
        elif direction.generator_fingerprint != model_fingerprint:
            fingerprint += ", OTHER GENERATOR"
        else:
            fingerprint += ", matches"
    extras = []
    for key in ("accuracy", "explained_variance_ratio", "eigenvalue"):
        if key in direction.meta:
            extras.append(f"{key} {_format_number(direction.meta[key])}")
    shape = "x".join(str(s) for s in direction.vector.shape)
    line = (f"{direction.name:<16} {direction.kind:<12} [{shape}]  layers "
            f"{_format_layers(direction.layers):<6} scale {direction.scale:<8.4g} "
            f"generator {fingerprint}")
    return line + (f"  {', '.join(extras)}" if extras else "")


def _list(args: argparse.Namespace) -> int:
    from vidinv.latent.directions import is_model_file, list_directions

    path = Path(args.path)
    model_fingerprint = None
    if path.is_file() and is_model_file(path):
        from vidinv.latent.directions import generator_fingerprint
        from vidinv.models.generator_io import load_generator

        model_fingerprint = generator_fingerprint(load_generator(path))
        print(f"{path}: generator {model_fingerprint}")
    sets = list_directions(path)
    if not sets:
        print(f"no direction files for {path} (a model keeps them in its folder's directions/)")
        return 0
    for directions in sets:
        print(f"{directions.source}:")
        for direction in directions:
            print(f"  {_direction_line(direction, model_fingerprint)}")
    return 0


def _show(args: argparse.Namespace) -> int:
    from vidinv.latent.directions import load_directions

    directions = load_directions(args.file)
    print(f"{args.file}: {len(directions)} direction(s)"
          + (", with a W mean" if directions.mean is not None else ""))
    for direction in directions:
        print(f"  {_direction_line(direction)}")
    if len(directions) == 1:
        direction = directions[0]
        low, high = direction.strength_range
        print(f"  strength range {low:g} .. {high:g}")
        for key, value in sorted(direction.meta.items()):
            print(f"  {key}: {_format_number(value)}")
    return 0


def add_directions_parser(subparsers: Any) -> None:
    """Add ``directions fit|list|show`` to the ``vidinv`` command's subparsers."""
    directions = subparsers.add_parser(
        "directions", help="fit (InterFaceGAN, SeFa, GANSpace), list and show edit directions")
    actions = directions.add_subparsers(dest="directions_command", metavar="ACTION",
                                        required=True)

    fit = actions.add_parser(
        "fit", help="find directions for a generator",
        description="Landmark attributes (smile, mouth_open, eyes_open, yaw) are fitted the "
                    "InterFaceGAN way on rendered samples scored from landmarks; sefa and "
                    "ganspace are computed from the weights / sampled W.")
    fit.add_argument("--model", required=True, help="generator checkpoint")
    fit.add_argument("--attr", required=True,
                     help=f"one of {', '.join((*LANDMARK_ATTRIBUTES, *CLOSED_FORM_METHODS))}")
    fit.add_argument("-o", "--output", required=True, help="output .safetensors")
    fit.add_argument("--samples", type=int,
                     help="samples to render/score (default 2000) or for PCA (default 10000)")
    fit.add_argument("--components", type=int,
                     help="directions to keep for sefa (default 5) and ganspace (default 20)")
    fit.add_argument("--layers", help="W+ layers FIRST-LAST (inclusive) the directions apply "
                                      "to (sefa: also the layers factorised); default all")
    fit.add_argument("--landmarks", default="mediapipe", choices=setting_choices("--landmarks"),
                     help="landmark backend for the attribute scores")
    fit.add_argument("--quantile", type=float, default=0.1,
                     help="share of samples kept at each end of the scores (default 0.1)")
    fit.add_argument("--truncation", type=float, default=1.0, help="truncation ψ of sampled w")
    fit.add_argument("--batch-size", type=int, default=16, help="render batch size")
    fit.add_argument("--seed", type=int, default=0)
    fit.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    fit.add_argument("--force", action="store_true", help="overwrite OUTPUT")
    fit.add_argument("--quiet", action="store_true", help="no progress bar")
    fit.set_defaults(handler=_fit, io_reads=("--model",), io_writes=("--output",),
                     io_create_parents=True)

    listing = actions.add_parser(
        "list", help="directions of a model (its folder's directions/) or in a folder")
    listing.add_argument("path", metavar="MODEL_OR_FOLDER")
    listing.set_defaults(handler=_list)

    show = actions.add_parser("show", help="shape, kind, layers, generator and accuracy")
    show.add_argument("file", help="native .safetensors or a foreign .npy/.pt/.npz direction")
    show.set_defaults(handler=_show)
