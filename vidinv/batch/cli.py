"""``vidinv batch edit|invert IN... -o OUTDIR``: many videos, in this process or on Ray.

Heavy modules (torch, the pipeline, Ray) are imported inside the handler only.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

REPORT_NAME = "vidinv-batch.json"


def add_engine_options(parser: argparse.ArgumentParser) -> None:
    """``--ray [ADDRESS]``, ``--workers``, ``--gpus-per-task`` (shared with ``bench ravdess``)."""
    parser.add_argument("--ray", nargs="?", const="local", metavar="ADDRESS",
                        help="run on Ray (pip install 'vidinv[ray]'): a local Ray sized to this "
                             "machine, or ADDRESS: auto (the cluster this machine is in) or "
                             "ray://HOST:PORT")
    parser.add_argument("--workers", type=int, metavar="N",
                        help="Ray workers (default: as many as the CPUs or GPUs allow)")
    parser.add_argument("--gpus-per-task", type=float, default=0.0, metavar="N",
                        help="GPUs each Ray worker holds (with --device cuda)")


def check_engine_options(args: argparse.Namespace) -> None:
    from vidinv.errors import VidinvError

    if args.workers is not None and args.workers < 1:
        raise VidinvError("--workers must be at least 1")
    if args.workers is not None and args.ray is None:
        raise VidinvError("--workers is for --ray; without it the videos run in this process "
                          "one after another")
    if args.gpus_per_task < 0:
        raise VidinvError("--gpus-per-task cannot be negative")


def _batch(args: argparse.Namespace) -> int:
    from vidinv.batch.engine import check_address, make_engine
    from vidinv.batch.files import Task, check_no_overwrite, expand_inputs, plan_outputs
    from vidinv.batch.run import counts_of, run_tasks, summary_table, write_report
    from vidinv.batch.worker import PipelineJob
    from vidinv.cli import _pipeline_config
    from vidinv.errors import InputFileError, VidinvError

    check_engine_options(args)
    if args.ray is not None:
        check_address(args.ray)
    edit = args.batch_command == "edit"
    if edit and not args.attr:
        raise VidinvError("say which edit: --attr NAME (see vidinv edit --list-attrs)")
    config = _pipeline_config(args)
    inputs = expand_inputs(args.inputs)
    outdir = Path(args.output)
    if outdir.exists() and not outdir.is_dir():
        raise InputFileError(f"{outdir}: is a file; -o takes a folder for the outputs")
    tail = f"_{Path(args.attr).stem}" if edit else "_inv"
    outputs = plan_outputs(inputs, outdir, tail)
    check_no_overwrite(inputs, outputs)
    report_path = Path(args.report) if args.report else outdir / REPORT_NAME
    if report_path.resolve() in {p.resolve() for p in inputs}:
        raise InputFileError(f"{report_path}: is an input; choose another --report path")
    # absolute paths: Ray workers may run in another folder (or on another machine)
    tasks = [Task(name=output.stem, input=source.absolute(), output=output.absolute())
             for source, output in zip(inputs, outputs, strict=True)]
    job = PipelineJob(model=args.model, config=config, attribute=args.attr if edit else None,
                      strength=args.strength if edit else 1.0,
                      progress=not args.quiet and args.ray is None)
    engine = make_engine(job, args.ray, workers=args.workers,
                         gpus_per_task=args.gpus_per_task)
    outdir.mkdir(parents=True, exist_ok=True)
    print(f"{len(tasks)} videos → {outdir} ({'ray' if args.ray else 'in this process'})")
    records, seconds = run_tasks(tasks, engine, progress=not args.quiet, echo=print)
    print(summary_table(records))
    report = write_report(report_path, records, seconds, engine.name, engine.workers,
                          command=args.batch_command, attribute=args.attr if edit else None)
    counts = counts_of(records)
    rate = report["videos_per_minute"]
    print(f"{counts['ok']} done, {counts['failed']} failed, {counts['skipped']} finished "
          f"earlier (skipped) in {seconds:.1f} s"
          + (f" ({rate:.1f} videos/min)" if rate else "") + f"; report: {report_path}")
    return 1 if counts["failed"] else 0


def add_batch_parser(subparsers, add_pipeline_options: Callable[[argparse.ArgumentParser],
                                                               None]) -> argparse.ArgumentParser:
    """Add ``batch`` (``edit`` and ``invert``) to the ``vidinv`` subcommands;
    ``add_pipeline_options`` adds the options ``vidinv edit`` has (model, preset, backend…)."""
    batch = subparsers.add_parser(
        "batch", help="edit or invert many videos (files, folders, globs), optionally on Ray")
    actions = batch.add_subparsers(dest="batch_command", metavar="ACTION", required=True)
    for name, help_text in (("edit", "edit the face in every video"),
                            ("invert", "reconstruct every video through the model")):
        action = actions.add_parser(
            name, help=help_text,
            description=f"{help_text.capitalize()}: OUTDIR/<input stem>_"
                        f"{'ATTR' if name == 'edit' else 'inv'}.mp4 each; a finished output is "
                        "skipped on a re-run; exit code 1 when a video failed.")
        action.add_argument("inputs", nargs="+", metavar="IN",
                            help="video files, folders (searched recursively) or globs")
        action.add_argument("-o", "--output", required=True, metavar="OUTDIR",
                            help="folder for the outputs (created if missing)")
        if name == "edit":
            action.add_argument("--attr", help="attribute (a direction of the model) or a "
                                               "direction file")
            action.add_argument("--strength", type=float, default=1.0,
                                help="edit strength α (default 1)")
            action.add_argument("--side-by-side", action="store_true",
                                help="original | edited")
        action.add_argument("--report", metavar="JSON",
                            help=f"per-video results (default: OUTDIR/{REPORT_NAME})")
        add_engine_options(action)
        add_pipeline_options(action)
        action.set_defaults(handler=_batch)
    return batch
