"""The ``vidinv`` command.

Heavy libraries (torch, onnx, …) are imported inside the command functions, so ``vidinv --help``
is fast. A :class:`~vidinv.errors.VidinvError` is printed as one line without a traceback and
exits non-zero; Ctrl-C exits with 130.
"""

from __future__ import annotations

import argparse
import errno
import logging
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from vidinv import __version__
from vidinv.errors import VidinvError
from vidinv.personalize.cli import add_personalize_parser

Handler = Callable[[argparse.Namespace], int]


# --- models ----------------------------------------------------------------------------------


def _models_info(args: argparse.Namespace) -> int:
    from vidinv.models.generator_io import load_generator
    from vidinv.models.summary import summarize_generator

    generator = load_generator(args.path)
    print(f"{args.path}")
    for line in summarize_generator(generator).lines():
        print(f"  {line}")
    return 0


def _models_convert(args: argparse.Namespace) -> int:
    from vidinv.models.generator_io import load_generator, save_generator

    if Path(args.dst).exists() and not args.force:
        raise VidinvError(f"{args.dst}: exists; pass --force to overwrite it")
    generator = load_generator(args.src)
    save_generator(generator, args.dst)
    print(f"wrote {args.dst} ({generator.resolution} px, n_latent {generator.n_latent})")
    return 0


def _models_init(args: argparse.Namespace) -> int:
    import torch

    from vidinv.models.generator_io import save_generator
    from vidinv.models.stylegan2 import StyleGAN2Generator

    if Path(args.dst).exists() and not args.force:
        raise VidinvError(f"{args.dst}: exists; pass --force to overwrite it")
    torch.manual_seed(args.seed)
    limits = {"--resolution": (args.resolution, 8, 4096), "--style-dim": (args.style_dim, 1, 4096),
              "--n-mlp": (args.n_mlp, 1, 64), "--channel-max": (args.channel_max, 1, 4096),
              "--channel-multiplier": (args.channel_multiplier, 1 / 64, 64)}
    for option, (value, low, high) in limits.items():
        if not low <= value <= high:  # also refuses NaN
            raise VidinvError(f"{option} {value}: must be between {low:g} and {high:g}")
    try:
        generator = StyleGAN2Generator(
            resolution=args.resolution, style_dim=args.style_dim, n_mlp=args.n_mlp,
            channel_multiplier=args.channel_multiplier, channel_max=args.channel_max)
    except (ValueError, RuntimeError) as error:
        raise VidinvError(f"cannot build that generator: {error}") from None
    generator.latent_avg.copy_(generator.compute_latent_avg())
    save_generator(generator, args.dst)
    print(f"wrote {args.dst}: an untrained (random) {args.resolution} px generator, seed "
          f"{args.seed}")
    return 0


def _models_list(args: argparse.Namespace) -> int:
    from vidinv.models import registry
    from vidinv.pipeline.bundle import DEFAULT_MODEL_FOLDER, GENERATOR_FILE

    if (DEFAULT_MODEL_FOLDER / GENERATOR_FILE).is_file():
        print(f"embedded default model (used when --model is not given): {DEFAULT_MODEL_FOLDER}")
        print("  64 px StyleGAN2 + Feature-Style Encoder, one identity; see MODEL_CARD.md there")
    installed = {entry.name: path for entry, path in registry.installed()}
    print(f"cache: {registry.default_cache_dir()}")
    for entry in registry.list_entries():
        state = f"installed at {installed[entry.name]}" if entry.name in installed else "pullable"
        print(f"  {entry.name:<28} {entry.kind:<10} {state}")
        print(f"  {'':<28} {entry.description}")
    return 0


def _models_assemble(args: argparse.Namespace) -> int:
    from vidinv.models.assemble import assemble_model

    model = assemble_model(args.generator, args.encoder, args.output,
                           direction_paths=args.directions or [], force=args.force)
    print(f"wrote {model.folder}: {model.resolution} px generator ({model.n_latent} W+ "
          f"entries), {model.encoder_input} px encoder, directions: "
          f"{', '.join(model.directions) or 'none'}; fingerprint {model.model_fingerprint}")
    return 0


def _models_pull(args: argparse.Namespace) -> int:
    from vidinv.models import registry

    path = registry.pull(args.name, progress=not args.quiet)
    print(path)
    return 0


# --- engines ---------------------------------------------------------------------------------


def _engines_export(args: argparse.Namespace) -> int:
    from vidinv.engines.generator_export import export_generator
    from vidinv.models.generator_io import load_generator

    generator = load_generator(args.model)
    if args.k is not None:
        try:
            generator.synthesis.feature_shape(args.k)
        except ValueError as error:
            raise VidinvError(f"--k {args.k}: {error}") from None
    paths = export_generator(generator, Path(args.out_dir), k=args.k)
    for name, path in paths.items():
        print(f"{name}: {path}")
    return 0


def _engines_build(args: argparse.Namespace) -> int:
    """Make the engines `edit` will use, with the same settings, into the same cache."""
    import time

    from vidinv.pipeline.bundle import engine_cache_folder, make_model_engines
    from vidinv.pipeline.wiring import needs_reconstruction

    if not args.backend:
        args.backend = "tensorrt"
    config = _pipeline_config(args)
    bundle = _load_bundle(args)
    started = time.perf_counter()
    engines = make_model_engines(bundle, config.engine,
                                 with_reconstruction=needs_reconstruction(config))
    print(f"{engines.encoder_engine.name}, {engines.edit_render_engine.name} on "
          f"{engines.device}, batch {config.engine.batch_size}: ready in "
          f"{time.perf_counter() - started:.1f} s")
    print(f"cache: {engine_cache_folder(bundle)}")
    return 0


# --- edit / invert / live ----------------------------------------------------------------------


def _pipeline_config(args: argparse.Namespace):
    from vidinv.config import PipelineConfig, load_preset

    config = load_preset(args.preset) if args.preset else PipelineConfig()
    overrides = list(args.set or [])
    if args.backend:
        overrides.append(f"engine.backend={args.backend}")
    if args.device:
        overrides.append(f"engine.device={args.device}")
    if args.precision:
        overrides.append(f"engine.precision={args.precision}")
    if args.batch is not None:
        overrides.append(f"engine.batch_size={args.batch}")
    if args.smooth:
        overrides += [f"face.crop_smoothing={args.smooth}", f"latent.smoothing={args.smooth}"]
    if args.landmarks:
        overrides.append(f"face.landmarks={args.landmarks}")
    if getattr(args, "paste", None):
        overrides.append(f"face.paste={args.paste}")
    if getattr(args, "strict", False):
        overrides.append("adapt.strict=true")
    if getattr(args, "tune", None) is not None:
        overrides.append(f"adapt.tune_steps={args.tune}")
    if getattr(args, "side_by_side", False):
        overrides.append("output.side_by_side=true")
    if args.crf is not None:
        overrides.append(f"output.crf={args.crf}")
    return config.with_overrides(overrides)


def _load_bundle(args: argparse.Namespace):
    from vidinv.pipeline.bundle import load_model_bundle, resolve_model_folder

    return load_model_bundle(resolve_model_folder(args.model))


def _print_attributes(bundle) -> None:
    from vidinv.personalize.warps import STRENGTH_SCALE, attribute_order, describe_attributes
    from vidinv.pipeline.commands import available_attributes

    names = attribute_order(available_attributes(bundle))
    print("attributes: " + (", ".join(names) if names else "(none stored with this model)"))
    if names:
        print(STRENGTH_SCALE + ":")
        print("\n".join("  " + line for line in describe_attributes(names)))


def _edits(args: argparse.Namespace, config) -> dict[str, float]:
    """``{attribute: strength}`` from --attr/--strength, else from the config's [edit]."""
    strength = args.strength if args.strength is not None else config.edit.strength
    from vidinv.pipeline.commands import parse_edits

    if args.attr:
        return parse_edits(args.attr, strength)
    return {config.edit.attribute: strength} if config.edit.attribute else {}


def _edit(args: argparse.Namespace) -> int:
    from vidinv.latent.editing import check_strength
    from vidinv.pipeline.commands import default_output, process_video, resolve_edits

    if args.strength is not None:
        check_strength(args.strength)
    config = _pipeline_config(args)
    bundle = _load_bundle(args)
    if args.list_attrs:
        _print_attributes(bundle)
        return 0
    if not args.input:
        raise VidinvError("give the input video: vidinv edit IN --attr NAME")
    edits = _edits(args, config)
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
    from vidinv.pipeline.commands import default_output, invert_video

    config = _pipeline_config(args)
    bundle = _load_bundle(args)
    source = Path(args.input)
    output = Path(args.output) if args.output else default_output(source, "inv")
    stats = invert_video(source, output, bundle, config, latents_path=args.latents,
                         progress=not args.quiet)
    print(f"wrote {output}: {stats.frames} frames in {stats.seconds:.1f} s "
          f"({stats.fps:.1f} fps)" + (f"; codes in {args.latents}" if args.latents else ""))
    return 0


def _live(args: argparse.Namespace) -> int:
    from vidinv.latent.editing import check_strength
    from vidinv.pipeline.commands import available_attributes, live, resolve_edits
    from vidinv.video.sources import FileCameraSource, WebcamSource

    if args.strength is not None:
        check_strength(args.strength)
    if args.seconds is not None and not 0 < args.seconds < float("inf"):
        raise VidinvError(f"--seconds {args.seconds}: give a positive number of seconds")
    if not args.preset:
        args.preset = "realtime"
    config = _pipeline_config(args)
    bundle = _load_bundle(args)
    known = sorted(available_attributes(bundle))
    strength = args.strength if args.strength is not None else config.edit.strength
    edits = _edits(args, config) or ({known[0]: strength} if known else {})
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


def _ui(args: argparse.Namespace) -> int:
    from vidinv.ui.server import serve

    return serve(port=args.port, model=args.model, open_browser=not args.no_browser)


def _add_pipeline_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model folder or name (default: the embedded model)")
    parser.add_argument("--preset", help="pipeline preset: offline_hq, realtime or a .toml")
    parser.add_argument("--backend", choices=("torch", "onnx", "tensorrt"))
    parser.add_argument("--device", choices=("cpu", "cuda"),
                        help="default: the backend's choice (cuda for tensorrt)")
    parser.add_argument("--precision", choices=("fp32", "fp16"),
                        help="default: fp32 (tensorrt: the engine spec's, fp16); fp16 needs cuda")
    parser.add_argument("--batch", type=int, help="faces per network call")
    parser.add_argument("--smooth", choices=("none", "causal", "centred"),
                        help="temporal smoothing of the crop and the codes")
    parser.add_argument("--landmarks", choices=("mediapipe", "dlib"))
    parser.add_argument("--paste", choices=("transfer", "render"),
                        help="how the edit reaches the frame: transfer (default) moves the "
                        "source's own pixels by the model's edit motion; render pastes the "
                        "model's rendering (for models that reconstruct faces well)")
    parser.add_argument("--crf", type=int, help="x264 quality (lower is better)")
    parser.add_argument("--strict", action="store_true",
                        help="stop (exit 2, no output) when the model does not know the face")
    parser.add_argument("--tune", type=int, metavar="N",
                        help="tune the generator on the clip's own frames for N steps first "
                        "(on in the offline_hq preset; --backend torch)")
    parser.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                        help="any pipeline setting (see vidinv/config.py); repeatable")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


# --- parser ----------------------------------------------------------------------------------

_EXISTING_OUTPUT = ("An existing output file is replaced only when the run succeeds (a failed "
                    "or interrupted run leaves it untouched); an output that is one of the "
                    "inputs, or an existing folder, is refused before any work.")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vidinv", description="Real-time video GAN inversion and face editing.")
    parser.add_argument("--version", action="version", version=f"vidinv {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true",
                        help="log debug messages and let native libraries' logs through")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

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
                      "folder gives IN_ATTR.png or IN_ATTR/). " + _EXISTING_OUTPUT)
    edit.add_argument("--side-by-side", action="store_true", help="original | edited")
    edit.add_argument("--list-attrs", action="store_true", help="list the model's attributes")
    _add_pipeline_options(edit)
    edit.set_defaults(handler=_edit, io_reads=("input", "--model", "--attr"),
                      io_writes=("--output",), io_mirror=("input", "--output"))

    invert = commands.add_parser("invert", help="reconstruct a video through the model")
    invert.add_argument("input", help="input video, picture (.png/.jpg) or folder of pictures")
    invert.add_argument("-o", "--output", help="output video (default: IN_inv.mp4; a picture or "
                        "folder gives IN_inv.png or IN_inv/). " + _EXISTING_OUTPUT)
    invert.add_argument("--latents", help="also save the per-frame codes to this .npz (an "
                        "existing file is replaced when the run succeeds)")
    _add_pipeline_options(invert)
    invert.set_defaults(handler=_invert, io_reads=("input", "--model"),
                        io_writes=("--output", "--latents"), io_mirror=("input", "--output"))

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
                          + _EXISTING_OUTPUT)
    live_cmd.add_argument("--virtual-camera", action="store_true",
                          help="send the edited stream to a virtual camera (vidinv[live])")
    live_cmd.add_argument("--no-window", action="store_true", help="show no window")
    live_cmd.add_argument("--seconds", type=float, help="stop after this many seconds")
    _add_pipeline_options(live_cmd)
    live_cmd.set_defaults(handler=_live, io_reads=("--source", "--model", "--attr"),
                          io_writes=("--output",))

    ui = commands.add_parser("ui", help="a local web page to try edits (vidinv[ui])")
    ui.add_argument("--port", type=int,
                    help="port on 127.0.0.1 (default 7860, or a free one if that is busy)")
    ui.add_argument("--model", help="model folder preselected on the page (default: embedded)")
    ui.add_argument("--no-browser", action="store_true", help="do not open a browser")
    ui.set_defaults(handler=_ui)

    models = commands.add_parser("models", help="inspect, convert, create and download models")
    models_cmds = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)

    info = models_cmds.add_parser("info", help="resolution, n_latent, channels, params, FLOPs")
    info.add_argument("path", help="native .safetensors, rosinality .pt or NVIDIA .pkl")
    info.set_defaults(handler=_models_info)

    convert = models_cmds.add_parser("convert", help="convert a checkpoint to the native format")
    convert.add_argument("src", help="rosinality .pt, NVIDIA .pkl or native file")
    convert.add_argument("dst", help="output .safetensors")
    convert.add_argument("--force", action="store_true", help="overwrite DST")
    convert.set_defaults(handler=_models_convert, io_reads=("src",), io_writes=("dst",),
                         io_create_parents=True)

    init = models_cmds.add_parser("init", help="write an untrained generator (training start)")
    init.add_argument("dst", help="output .safetensors")
    init.add_argument("--resolution", type=int, default=256)
    init.add_argument("--style-dim", type=int, default=512)
    init.add_argument("--n-mlp", type=int, default=8)
    init.add_argument("--channel-multiplier", type=float, default=2)
    init.add_argument("--channel-max", type=int, default=512)
    init.add_argument("--seed", type=int, default=0)
    init.add_argument("--force", action="store_true", help="overwrite DST")
    init.set_defaults(handler=_models_init, io_writes=("dst",), io_create_parents=True)

    listing = models_cmds.add_parser("list", help="installed models and models to pull")
    listing.set_defaults(handler=_models_list)

    assemble = models_cmds.add_parser(
        "assemble", help="check that a generator, an encoder and directions fit, and write "
        "them as one model folder (native files, fingerprint, model card)")
    assemble.add_argument("--generator", required=True,
                          help="NVIDIA .pkl, rosinality .pt or native generator")
    assemble.add_argument("--encoder", required=True,
                          help="official Feature-Style Encoder 143_enc.pth or native encoder")
    assemble.add_argument("--directions", nargs="+", metavar="[NAME=]FILE",
                          help="direction files (e4e/InterFaceGAN .pt, .npy, GANSpace, native)")
    assemble.add_argument("-o", "--output", required=True, help="the model folder to write")
    assemble.add_argument("--force", action="store_true", help="replace an existing folder")
    assemble.set_defaults(handler=_models_assemble)

    pull = models_cmds.add_parser("pull", help="download a public checkpoint into the cache")
    pull.add_argument("name")
    pull.add_argument("--quiet", action="store_true", help="no progress bar")
    pull.set_defaults(handler=_models_pull)

    engines = commands.add_parser("engines", help="export ONNX files and build TensorRT engines")
    engines_cmds = engines.add_subparsers(dest="engines_command", metavar="ACTION",
                                          required=True)
    export = engines_cmds.add_parser("export", help="export the generator's synthesis to ONNX")
    export.add_argument("model", help="generator checkpoint")
    export.add_argument("-o", "--out-dir", default="engines/build", help="output folder")
    export.add_argument("--k", type=int, help="feature-tensor layer (default: the FSE's, 5)")
    export.set_defaults(handler=_engines_export, io_reads=("model",), io_folders=("--out-dir",))

    build = engines_cmds.add_parser(
        "build", help="make the engines `edit` uses (same options, same cache), ahead of time; "
        "default backend tensorrt (needs an NVIDIA GPU and vidinv[tensorrt])")
    _add_pipeline_options(build)
    build.set_defaults(handler=_engines_build)

    from vidinv.batch.cli import add_batch_parser

    add_batch_parser(commands, _add_pipeline_options)

    from vidinv.bench.cli import add_bench_parser

    add_bench_parser(commands)

    from vidinv.latent.cli import add_directions_parser

    add_directions_parser(commands)

    from vidinv.train.cli import add_train_parser

    add_train_parser(commands)
    add_personalize_parser(commands)
    return parser


def _configure_logging(verbose: bool) -> None:
    """Show vidinv's own messages; other libraries keep their default (warnings only)."""
    logger = logging.getLogger("vidinv")
    if not logger.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("vidinv: %(message)s"))
        logger.addHandler(handler)
        logger.propagate = False
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)


#: OS errors that the machine's state causes (full or read-only disk, permissions, name
#: limits), reported as one line; other OS errors keep their traceback.
_ENVIRONMENT_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES,
                                 errno.EPERM, errno.ENAMETOOLONG, errno.EMFILE, errno.ENFILE})


class Terminated(KeyboardInterrupt):
    """SIGTERM or SIGHUP arrived: unwound like Ctrl-C, so every partial output is removed."""

    def __init__(self, signum: int) -> None:
        super().__init__(signum)
        self.signum = signum


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated(signum)


def _install_signal_handlers() -> dict[int, object]:
    """SIGTERM (docker stop, timeout, systemd) and SIGHUP (a closed terminal) raise
    :class:`Terminated` in the main thread, as SIGINT raises KeyboardInterrupt. Returns the
    previous handlers (restored when :func:`main` returns)."""
    import signal
    import threading

    previous: dict[int, object] = {}
    if threading.current_thread() is not threading.main_thread():
        return previous
    for name in ("SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, _raise_terminated)
    return previous


def main(argv: Sequence[str] | None = None) -> int:
    import signal

    args = build_parser().parse_args(argv)
    _configure_logging(args.verbose)
    if args.verbose:
        from vidinv.native_log import show_native_logs

        show_native_logs()  # otherwise routine MediaPipe/TFLite lines are filtered off fd 2
    handler: Handler = args.handler
    previous = _install_signal_handlers()
    try:
        from vidinv.io_safety import check_command_paths

        check_command_paths(args)
        return handler(args)
    except VidinvError as error:
        print(f"vidinv: error: {error}", file=sys.stderr)
        return error.exit_code
    except Terminated as stop:
        print(f"vidinv: stopped by {signal.Signals(stop.signum).name}", file=sys.stderr)
        return 128 + stop.signum
    except KeyboardInterrupt:
        print("vidinv: interrupted", file=sys.stderr)
        return 130
    except RecursionError:
        print("vidinv: error: an input file is nested too deeply to be read (a crafted or "
              "corrupt file?); check the files you passed", file=sys.stderr)
        return 2
    except OSError as error:
        if error.errno not in _ENVIRONMENT_ERRNOS:
            raise
        where = f"{error.filename}: " if error.filename else ""
        print(f"vidinv: error: {where}{error.strerror}; free space, fix the permissions or "
              "choose another output path (nothing partial was kept)", file=sys.stderr)
        return 2
    finally:
        for signum, handler_before in previous.items():
            signal.signal(signum, handler_before)  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
