"""Running one clip (a video file, a picture or a folder of pictures) through the pipeline:
:func:`process_video` edits or inverts it into an output file, :func:`invert_video` also saves
the per-frame codes. Output files are written whole or not at all.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from pathlib import Path

from vidinv.config import PipelineConfig
from vidinv.frame import Frame
from vidinv.latent.archive import LatentArchive
from vidinv.models.folder import ModelBundle
from vidinv.pipeline.adapt import adapt_to_clip, familiarity_stage
from vidinv.pipeline.outputs import check_output, input_kind
from vidinv.pipeline.runner import RunStats, run_threaded
from vidinv.pipeline.runtime import stage_runtime
from vidinv.pipeline.wiring import build_pipeline, make_networks, open_sink, open_source


def process_video(input_path: str | Path, output_path: str | Path, bundle: ModelBundle,
                  config: PipelineConfig, editor=None, *, progress: bool = True,
                  on_frame: Callable[[Frame], None] | None = None) -> RunStats:
    """Invert (``editor`` None) or edit every frame of a video file into ``output_path``.

    The output has the input's frame count, timestamps and audio (copied). ``on_frame`` sees
    each finished frame (e.g. to save its codes). A picture (``.png``, ``.jpg``, …) gives a
    picture, a folder of pictures a new folder of numbered ``.png`` frames. An existing output
    file is replaced only once the new one is complete; an existing non-empty output folder
    is refused.
    """
    from tqdm import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    input_path, output_path = Path(input_path), Path(output_path)
    check_output(input_path, output_path, bundle)
    reader, total = open_source(input_path, config)
    output_writer = open_sink(input_path, output_path, config, reader)
    familiarity = None
    if input_kind(input_path) == "video":  # the familiarity check and --tune are for clips
        if config.adapt.tune_steps > 0:  # training: it keeps the library's threads
            bundle, editor = adapt_to_clip(input_path, bundle, config, editor)
        familiarity = familiarity_stage(input_path, bundle, config)
    # the engines' traces and the familiarity check (a stage) run with the stages' thread
    # budget too: torch's default pool (one thread per core) spins while it waits, and on a
    # busy machine that spinning cost more CPU than the work itself
    with stage_runtime(config.engine.threads):
        segments = build_pipeline(config, make_networks(bundle, config, editor),
                                  str(input_path), familiarity=familiarity)
        # the bar shows from the first frame written: an error about the clip's first frames
        # (no face, a --face that is not there, --strict's unknown face) stays the only line;
        # a note during the run (the familiarity check's) is printed above the bar, not into it
        with output_writer as writer, contextlib.ExitStack() as shown, \
                (logging_redirect_tqdm([logging.getLogger("vidinv")]) if progress
                 else contextlib.nullcontext()):
            bar = None

            def sink(frame: Frame) -> None:
                nonlocal bar
                if on_frame is not None:
                    on_frame(frame)
                writer.write(frame)
                if bar is None:
                    bar = shown.enter_context(tqdm(total=total, unit="frame",
                                                   disable=not progress,
                                                   desc=output_path.name, leave=False))
                bar.update()

            stats = run_threaded(reader, segments, sink, queue_size=config.queue_size)
    return stats


def invert_video(input_path: str | Path, output_path: str | Path, bundle: ModelBundle,
                 config: PipelineConfig, *, latents_path: str | Path | None = None,
                 progress: bool = True) -> RunStats:
    """Reconstruction only; optionally the per-frame codes into ``latents_path`` (.npz).

    Every path is checked before any frame is read: ``latents_path`` may be neither the input,
    the output, a model file nor an existing folder.
    """
    latents = Path(latents_path) if latents_path else None
    check_output(Path(input_path), Path(output_path), bundle, latents)
    archive = LatentArchive(latents) if latents is not None else None
    try:
        stats = process_video(input_path, output_path, bundle, config, None, progress=progress,
                              on_frame=archive)
    except BaseException:
        if archive is not None:
            archive.abort()
        raise
    if archive is not None:
        try:
            archive.close()
        except BaseException:
            Path(output_path).unlink(missing_ok=True)  # no half result: video without codes
            raise
    return stats
