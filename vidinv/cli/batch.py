"""``vidinv batch edit|invert IN... -o OUTDIR``: many videos, in this process or on Ray.

Heavy modules (torch, the pipeline, Ray) are imported inside the handler only.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from vidinv.cli.options import (
    add_pipeline_options,
    add_ray_options,
    check_ray_options,
    pipeline_config,
)

REPORT_NAME = "vidinv-batch.json"


def _batch(args: argparse.Namespace) -> int:
    from vidinv.batch.executor import make_executor
    from vidinv.batch.files import Task, check_no_overwrite, expand_inputs, plan_outputs
    from vidinv.batch.run import counts_of, run_tasks, summary_table, write_report
    from vidinv.batch.worker import PipelineJob
    from vidinv.errors import InputFileError, VidinvError

    check_ray_options(args)
    edit = args.batch_command == "edit"
    if edit and not args.attr:
        raise VidinvError("say which edit: --attr NAME (see vidinv edit --list-attrs)")
    config = pipeline_config(args)
    outdir = Path(args.output)
    inputs = expand_inputs(args.inputs, exclude=[outdir])  # never its own earlier outputs
    if outdir.exists() and not outdir.is_dir():
        raise InputFileError(f"{outdir}: is a file; -o takes a folder for the outputs")
    tail = f"_{Path(args.attr).stem}" if edit else "_inv"
    outputs = plan_outputs(inputs, outdir, tail)
    check_no_overwrite(inputs, outputs)
    report_path = Path(args.report) if args.report else outdir / REPORT_NAME
    from vidinv.io_safety import check_paths

    # every input, model and direction file against every output and the report, by identity
    check_paths([*(("input", p) for p in inputs), ("--model", args.model),
                 ("--attr", args.attr if edit and args.attr and Path(args.attr).exists()
                  else None)],
                [*(("output", p) for p in outputs), ("--report", report_path)],
                [("-o", outdir)], create_parents=True)
    # absolute paths: Ray workers may run in another folder (or on another machine)
    tasks = [Task(name=output.stem, input=source.absolute(), output=output.absolute())
             for source, output in zip(inputs, outputs, strict=True)]
    job = PipelineJob(model=args.model, config=config, attribute=args.attr if edit else None,
                      strength=args.strength if edit else 1.0,
                      progress=not args.quiet and args.ray is None)
    executor = make_executor(job, args.ray, workers=args.workers,
                             gpus_per_task=args.gpus_per_task)
    outdir.mkdir(parents=True, exist_ok=True)
    print(f"{len(tasks)} videos → {outdir} ({'ray' if args.ray else 'in this process'})")
    records, seconds = run_tasks(tasks, executor, progress=not args.quiet, echo=print)
    print(summary_table(records))
    report = write_report(report_path, records, seconds, executor.name, executor.workers,
                          command=args.batch_command, attribute=args.attr if edit else None)
    counts = counts_of(records)
    rate = report["videos_per_minute"]
    print(f"{counts['ok']} done, {counts['failed']} failed, {counts['skipped']} finished "
          f"earlier (skipped) in {seconds:.1f} s"
          + (f" ({rate:.1f} videos/min)" if rate else "") + f"; report: {report_path}")
    return 1 if counts["failed"] else 0


def add_batch_parser(subparsers) -> argparse.ArgumentParser:
    """Add ``batch`` (``edit`` and ``invert``) to the ``vidinv`` subcommands, with the pipeline
    options ``vidinv edit`` has (model, preset, backend…)."""
    batch = subparsers.add_parser(
        "batch", help="edit or invert many videos (files, folders, globs), optionally on Ray")
    actions = batch.add_subparsers(dest="batch_command", metavar="ACTION", required=True)
    for name, help_text in (("edit", "edit the face in every video"),
                            ("invert", "reconstruct every video through the model")):
        action = actions.add_parser(
            name, help=help_text,
            description=f"{help_text.capitalize()}: OUTDIR/<input stem>_"
                        f"{'ATTR' if name == 'edit' else 'inv'}.mp4 each, with OUT.vidinv.json "
                        "recording what made it; a re-run skips an output made from the same "
                        "input, settings and model that still decodes whole, and says why it "
                        "redoes any other; exit code 1 when a video failed.")
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
        add_ray_options(action)
        add_pipeline_options(action)
        action.set_defaults(handler=_batch)
    return batch
