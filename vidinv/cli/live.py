"""``vidinv live``: a webcam (or a clip played as one) edited live."""

from __future__ import annotations

import argparse

from vidinv.cli.options import (
    EXISTING_OUTPUT,
    add_pipeline_options,
    edits_from_args,
    load_bundle,
    pipeline_config,
)
from vidinv.errors import VidinvError


def _live(args: argparse.Namespace) -> int:
    from vidinv.latent.editing import check_strength
    from vidinv.pipeline.attributes import available_attributes, resolve_edits
    from vidinv.pipeline.live import live
    from vidinv.video.sources import FileCameraSource, WebcamSource

    if args.strength is not None:
        check_strength(args.strength)
    if args.seconds is not None and not 0 < args.seconds < float("inf"):
        raise VidinvError(f"--seconds {args.seconds}: give a positive number of seconds")
    if not args.preset:
        args.preset = "realtime"
    config = pipeline_config(args)
    bundle = load_bundle(args)
    known = sorted(available_attributes(bundle))
    strength = args.strength if args.strength is not None else config.edit.strength
    edits = edits_from_args(args, config) or ({known[0]: strength} if known else {})
    editor = resolve_edits(bundle, edits, extra=known) if edits else None
    # a clip played as a camera keeps only the newest frame, as a webcam source does
    source = (FileCameraSource(args.source, loop=args.loop, buffer_size=1) if args.source
              else WebcamSource(args.camera))
    report = live(source, bundle, config, editor, output_path=args.output,
                  max_seconds=args.seconds, show=False if args.no_window else None,
                  virtual_camera=args.virtual_camera)
    print(f"live: {report.frames_shown} frames shown at {report.fps:.1f} fps, "
          f"{report.frames_dropped} dropped by the source, latency median "
          f"{report.latency_ms_median:.0f} ms, max {report.latency_ms_max:.0f} ms")
    return 0


def add_live_parser(commands) -> argparse.ArgumentParser:
    """Add ``live`` to the ``vidinv`` subcommands."""
    live_cmd = commands.add_parser("live", help="edit a webcam (or a clip played as one) live")
    live_cmd.add_argument("--camera", type=int, default=0, help="camera index (default 0)")
    live_cmd.add_argument("--source", help="a video file played as a camera instead")
    live_cmd.add_argument("--loop", action="store_true", help="loop --source")
    live_cmd.add_argument("--attr", action="append", metavar="NAME[=STRENGTH]",
                          help="starting edit(s); keys a/+/-/0 select and change any of the "
                          "model's attributes (default: edit.attribute of the preset, else "
                          "the model's first at --strength)")
    live_cmd.add_argument("--strength", type=float,
                          help="strength α of an --attr without =STRENGTH (default: "
                          "edit.strength of the preset, 1)")
    live_cmd.add_argument("--output", help="write original | edited here (no window needed). "
                          + EXISTING_OUTPUT)
    live_cmd.add_argument("--virtual-camera", action="store_true",
                          help="send the edited stream to a virtual camera (vidinv[live])")
    live_cmd.add_argument("--no-window", action="store_true", help="show no window")
    live_cmd.add_argument("--seconds", type=float, help="stop after this many seconds")
    add_pipeline_options(live_cmd)
    live_cmd.set_defaults(handler=_live, io_reads=("--source", "--model", "--attr", "--face-ref"),
                          io_writes=("--output",))
    return live_cmd
