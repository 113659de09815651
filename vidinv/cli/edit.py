"""``vidinv edit`` and ``vidinv invert``: a video, a picture or a folder of pictures through the
model."""

from __future__ import annotations

import argparse
from pathlib import Path

from vidinv.cli.options import (
    EXISTING_OUTPUT,
    add_pipeline_options,
    edits_from_args,
    load_bundle,
    pipeline_config,
)
from vidinv.errors import VidinvError


def _print_attributes(bundle) -> None:
    from vidinv.personalize.warps import STRENGTH_SCALE, attribute_order, describe_attributes
    from vidinv.pipeline.attributes import available_attributes

    names = attribute_order(available_attributes(bundle))
    print("attributes: " + (", ".join(names) if names else "(none stored with this model)"))
    if names:
        print(STRENGTH_SCALE + ":")
        print("\n".join("  " + line for line in describe_attributes(names)))


def _edit(args: argparse.Namespace) -> int:
    from vidinv.latent.editing import check_strength
    from vidinv.pipeline.attributes import resolve_edits
    from vidinv.pipeline.clip import process_video
    from vidinv.pipeline.outputs import default_output

    if args.strength is not None:
        check_strength(args.strength)
    config = pipeline_config(args)
    bundle = load_bundle(args)
    if args.list_attrs:
        _print_attributes(bundle)
        return 0
    if not args.input:
        raise VidinvError("give the input video: vidinv edit IN --attr NAME")
    edits = edits_from_args(args, config)
    if not edits:
        raise VidinvError("say which edit: --attr NAME[=STRENGTH] or --set edit.attribute=NAME "
                          "(see --list-attrs)")
    editor = resolve_edits(bundle, edits)
    source = Path(args.input)
    output = Path(args.output) if args.output else default_output(
        source, "+".join(Path(name).stem for name in edits))
    stats = process_video(source, output, bundle, config, editor, progress=not args.quiet)
    print(f"wrote {output}: {stats.frames} frames in {stats.seconds:.1f} s "
          f"({stats.fps:.1f} fps)")
    return 0


def _invert(args: argparse.Namespace) -> int:
    from vidinv.pipeline.clip import invert_video
    from vidinv.pipeline.outputs import default_output

    config = pipeline_config(args)
    bundle = load_bundle(args)
    source = Path(args.input)
    output = Path(args.output) if args.output else default_output(source, "inv")
    stats = invert_video(source, output, bundle, config, latents_path=args.latents,
                         progress=not args.quiet)
    print(f"wrote {output}: {stats.frames} frames in {stats.seconds:.1f} s "
          f"({stats.fps:.1f} fps)" + (f"; codes in {args.latents}" if args.latents else ""))
    return 0


def add_edit_parsers(commands) -> None:
    """Add ``edit`` and ``invert`` to the ``vidinv`` subcommands."""
    edit = commands.add_parser("edit", help="edit the face in a video (same length and audio)")
    edit.add_argument("input", nargs="?",
                      help="input video, picture (.png/.jpg) or folder of pictures")
    edit.add_argument("--attr", action="append", metavar="NAME[=STRENGTH]",
                      help="attribute (a direction of the model, or a direction file) and its "
                      "strength: 1 = a clear smile anyone would call one, 2 = broad, 3 = "
                      "beaming (every attribute: 1 clear, 2 broad, 3 full; negative = the "
                      "opposite); repeat for several edits in one pass (default: "
                      "edit.attribute of the preset). The embedded model has smile, frown, "
                      "brows_raised, eyes_closed, eyes_open, eyes_wide, mouth_open, pout, "
                      "gaze_horizontal, gaze_vertical, yaw, pitch (--list-attrs)")
    edit.add_argument("--strength", type=float,
                      help="strength α of an --attr given without =STRENGTH (default: "
                      "edit.strength of the preset, 1)")
    edit.add_argument("-o", "--output", help="output video (default: IN_ATTR.mp4; a picture or "
                      "folder gives IN_ATTR.png or IN_ATTR/). " + EXISTING_OUTPUT)
    edit.add_argument("--side-by-side", action="store_true", help="original | edited")
    edit.add_argument("--list-attrs", action="store_true", help="list the model's attributes")
    add_pipeline_options(edit)
    edit.set_defaults(handler=_edit, io_reads=("input", "--model", "--attr", "--face-ref"),
                      io_writes=("--output",), io_mirror=("input", "--output"))

    invert = commands.add_parser("invert", help="reconstruct a video through the model")
    invert.add_argument("input", help="input video, picture (.png/.jpg) or folder of pictures")
    invert.add_argument("-o", "--output", help="output video (default: IN_inv.mp4; a picture or "
                        "folder gives IN_inv.png or IN_inv/). " + EXISTING_OUTPUT)
    invert.add_argument("--latents", help="also save the per-frame codes to this .npz (an "
                        "existing file is replaced when the run succeeds)")
    add_pipeline_options(invert)
    invert.set_defaults(handler=_invert, io_reads=("input", "--model", "--face-ref"),
                        io_writes=("--output", "--latents"), io_mirror=("input", "--output"))
