"""``vidinv bench ravdess|clip``: the reconstruction and stability benchmark.

Heavy modules (torch, dlib, the pipeline) are imported inside the handlers only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidinv.cli.options import (
    add_ray_options,
    check_ray_options,
    setting_choices,
    setting_overrides,
)


def _options(args: argparse.Namespace):
    from vidinv.evaluate.run import BenchOptions
    from vidinv.latent.editing import check_strength

    check_strength(args.strength)
    return BenchOptions(
        model=args.model, preset=args.preset, overrides=tuple(setting_overrides(args)),
        edit=args.edit,
        strength=args.strength, max_frames=args.max_frames or None,
        lpips_backbone=args.lpips_backbone, lpips_lin=args.lpips_lin,
        lpips_size=args.lpips_size, warp_max_side=args.warp_size, identity=not args.no_id,
        keep_videos=args.keep_videos, progress=not args.quiet,
        ray=getattr(args, "ray", None), workers=getattr(args, "workers", None),
        gpus_per_task=getattr(args, "gpus_per_task", 0.0))


def _bench_ravdess(args: argparse.Namespace) -> int:
    from vidinv.evaluate.ravdess import find_videos
    from vidinv.evaluate.run import run_benchmark

    check_ray_options(args)
    options = _options(args)
    videos = find_videos(args.root, args.n, args.seed, args.modality)
    options.extra_settings = {"dataset": "RAVDESS"}
    print(f"RAVDESS: {len(videos)} videos (seed {args.seed}) from {args.root}")
    out = Path(args.out) if args.out else Path("vidinv-bench") / "ravdess"
    run_benchmark([(video.path, video.meta()) for video in videos], out, options, args.compare)
    print(f"results in {out}")
    return 0


def _bench_clip(args: argparse.Namespace) -> int:
    from vidinv.evaluate.clip import run_clip

    options = _options(args)
    out = Path(args.out) if args.out else Path("vidinv-bench") / Path(args.file).stem
    run_clip(args.file, out, options, args.compare)
    print(f"results in {out}")
    return 0


_BENCH_READS = ("--root", "--model", "--edit", "--lpips-backbone", "--lpips-lin")


def _add_common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", help="model folder (default: the embedded model)")
    parser.add_argument("--preset", help="pipeline preset: offline_hq, realtime or a .toml")
    parser.add_argument("--smooth", choices=setting_choices("--smooth"),
                        help="crop and latent smoothing (default: the preset's)")
    parser.add_argument("--batch", type=int, help="faces per network call")
    parser.add_argument("--landmarks", choices=setting_choices("--landmarks"))
    parser.add_argument("--backend", choices=setting_choices("--backend"))
    parser.add_argument("--device", metavar="{cpu,cuda,cuda:N}")
    parser.add_argument("--set", action="append", metavar="SECTION.FIELD=VALUE",
                        help="any pipeline setting (see vidinv/config.py); repeatable")
    parser.add_argument("--edit", metavar="ATTR",
                        help="measure an edit (a direction of the model or a file) instead of "
                             "the inversion")
    parser.add_argument("--strength", type=float, default=1.0, help="edit strength α")
    parser.add_argument("--compare", choices=("smoothing", "batching"),
                        help="run two variants side by side: smoothing off/on, or batch 1 vs "
                             "batched")
    parser.add_argument("--max-frames", type=int, default=0,
                        help="use only the first N frames of each video (the FSE script: 120)")
    parser.add_argument("--out", help="output folder (default: vidinv-bench/NAME)")
    parser.add_argument("--lpips-backbone", metavar="PTH",
                        help="torchvision vgg16/alexnet state dict (or $VIDINV_LPIPS_BACKBONE)")
    parser.add_argument("--lpips-lin", metavar="PTH",
                        help="LPIPS v0.1 linear heads vgg.pth/alex.pth (or $VIDINV_LPIPS_LIN)")
    parser.add_argument("--lpips-size", type=int, default=256, help="LPIPS input size (px)")
    parser.add_argument("--warp-size", type=int, default=320,
                        help="longer side (px) for the optical flow of the warping error")
    parser.add_argument("--no-id", action="store_true",
                        help="skip the identity metrics (ID, TL-ID, TG-ID; the slowest part)")
    parser.add_argument("--keep-videos", action="store_true",
                        help="keep the output videos next to the per-video results")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")


def add_bench_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``bench`` (with ``ravdess`` and ``clip``) to the ``vidinv`` subcommands."""
    bench = subparsers.add_parser(
        "bench", help="reconstruction and stability metrics (RAVDESS, or one clip)")
    actions = bench.add_subparsers(dest="bench_command", metavar="ACTION", required=True)

    ravdess = actions.add_parser(
        "ravdess", help="the FSE paper's Table 2 protocol on sampled RAVDESS videos")
    ravdess.add_argument("--root", required=True,
                         help="RAVDESS folder (Actor_01/ … with MM-VC-EE-II-SS-RR-AA.mp4)")
    ravdess.add_argument("--n", type=int, default=120, help="videos to sample (default 120)")
    ravdess.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    ravdess.add_argument("--modality", choices=("any", "full-av", "video-only"), default="any",
                         help="which RAVDESS files (any: one per recording)")
    _add_common(ravdess)
    add_ray_options(ravdess)
    ravdess.set_defaults(handler=_bench_ravdess, io_reads=_BENCH_READS, io_folders=("--out",))

    clip = actions.add_parser("clip", help="the same metrics on one video file")
    clip.add_argument("file", help="input video")
    _add_common(clip)
    clip.set_defaults(handler=_bench_clip, io_reads=("file", *_BENCH_READS),
                      io_folders=("--out",))
    return bench
