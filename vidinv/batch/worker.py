"""What a worker does: load the models once, then run one task (one video) at a time.

A **job** says what every task of a batch shares and does: :meth:`Job.load` builds what a
worker keeps (models, editor, metric models), :meth:`Job.run` turns one :class:`Task` into its
record. Jobs are small frozen dataclasses, so Ray can ship them to the workers.

:class:`Worker` wraps a job for an engine: in this process, or as a Ray actor (then ``status``
answers from its own thread while ``run`` works). A record is a dict::

    {"name", "input", "output", "status": "ok" | "failed" | "skipped", "error",
     "seconds", "frames", "fps", "metrics": {...}, "pid"}

A video that fails because of the video (no face, unreadable file, or any other exception
inside the task) gives a ``failed`` record naming the error: the batch goes on. Only a worker
process that dies is Ray's business (the task is retried on a restarted worker).
"""

from __future__ import annotations

import logging
import os
import threading
import time
from dataclasses import asdict, dataclass, is_dataclass
from typing import Any, Protocol

from vidinv.batch.files import (
    Task,
    file_sha256,
    remove_partials,
    sidecar_path,
    why_redo,
    write_sidecar,
)
from vidinv.errors import VidinvError

log = logging.getLogger(__name__)

SKIPPED_NOTE = "finished earlier, skipped"


class Job(Protocol):
    def load(self) -> Any:
        """What a worker keeps between tasks (models…); raises VidinvError for user errors."""

    def run(self, kit: Any, task: Task) -> dict[str, Any]:
        """One task → its record (at least ``status``; see the module)."""


def base_record(task: Task) -> dict[str, Any]:
    return {"name": task.name, "input": str(task.input), "output": str(task.output),
            "status": None, "error": None, "seconds": None, "frames": None, "fps": None,
            "metrics": {}, **task.meta}


@dataclass(frozen=True)
class PipelineJob:
    """``vidinv edit`` (``attribute`` given) or ``invert`` on each video: the same
    :func:`~vidinv.pipeline.clip.process_video` call, stages and wiring as the single-video
    commands.

    Args:
        model: model folder (None: the embedded model).
        config: the PipelineConfig (preset plus overrides).
        attribute / strength: the edit (None: invert).
        progress: per-frame progress bar (in-process runs only).
    """

    model: str | None
    config: Any
    attribute: str | None = None
    strength: float = 1.0
    progress: bool = False

    def load(self) -> tuple[Any, Any, dict[str, Any]]:
        """(model bundle, editor or None, what every output of this job is made by except
        its input: model fingerprint, direction, settings, vidinv version)."""
        from vidinv import __version__
        from vidinv.io_safety import to_jsonable
        from vidinv.models.folder import load_model_bundle, resolve_model_folder
        from vidinv.pipeline.attributes import resolve_editor

        bundle = load_model_bundle(resolve_model_folder(self.model))
        editor = (resolve_editor(bundle, self.attribute, self.strength)
                  if self.attribute else None)
        direction = None
        if editor is not None:
            import hashlib

            offset = editor.offset.detach().cpu().contiguous().numpy()
            direction = hashlib.sha256(offset.tobytes()).hexdigest()[:16]
        made_by = {"model": bundle.fingerprint(), "direction": direction,
                   "settings": to_jsonable({
                       "command": "edit" if self.attribute else "invert",
                       "attribute": self.attribute, "strength": self.strength,
                       "config": asdict(self.config) if is_dataclass(self.config)
                       else self.config}),
                   "vidinv_version": __version__}
        return bundle, editor, made_by

    def run(self, kit: tuple[Any, Any, dict[str, Any]], task: Task) -> dict[str, Any]:
        from vidinv.frame import Frame
        from vidinv.pipeline.clip import process_video

        bundle, editor, common = kit
        record = base_record(task)
        made_by = {"input": {"sha256": file_sha256(task.input),
                             "size": task.input.stat().st_size}, **common}
        why = why_redo(task.output, made_by)
        if why is None:
            record.update(status="skipped", note=SKIPPED_NOTE)
            return record
        # the record goes first: from here on it would describe a file being replaced
        sidecar_path(task.output).unlink(missing_ok=True)
        stale = remove_partials(task.output)
        if stale:
            log.info("%s: removed %d unfinished temporary file(s) of an earlier try",
                     task.output, stale)
        face_frames = 0

        def count_faces(frame: Frame) -> None:
            nonlocal face_frames
            face_frames += bool(frame.face_found)

        task.output.parent.mkdir(parents=True, exist_ok=True)
        stats = process_video(task.input, task.output, bundle, self.config, editor,
                              progress=self.progress, on_frame=count_faces)
        write_sidecar(task.output, made_by, stats.frames)
        record.update(status="ok", frames=stats.frames, seconds=stats.seconds, fps=stats.fps,
                      note=f"redone: {why}" if why else None,
                      metrics={"face_frames": face_frames,
                               "face_share": face_frames / stats.frames if stats.frames
                               else None})
        return record


class Worker:
    """Holds a job's models and runs its tasks one at a time (see the module).

    A :class:`VidinvError` while loading (a wrong ``--model``, an unknown attribute) is kept
    as :attr:`load_error` rather than raised, so that a Ray actor does not restart over and over
    on a user's mistake; the engine checks :meth:`status` and raises it once, as one line.
    """

    def __init__(self, job: Job, kit: Any = None) -> None:
        self.job = job
        self.kit = kit
        self.load_error: str | None = None
        self._current: str | None = None
        self._lock = threading.Lock()
        if kit is None:
            try:
                self.kit = job.load()
            except VidinvError as error:
                self.load_error = str(error)

    def status(self) -> dict[str, Any]:
        """``{"pid", "task" (the name of the video being run, or None), "load_error"}``."""
        with self._lock:
            return {"pid": os.getpid(), "task": self._current, "load_error": self.load_error}

    def run(self, task: Task) -> dict[str, Any]:
        """Run one task; a failure of this video becomes a ``failed`` record."""
        started = time.monotonic()
        with self._lock:
            self._current = task.name
        try:
            if self.load_error is not None:
                raise VidinvError(self.load_error)
            record = self.job.run(self.kit, task)
        except VidinvError as error:
            record = base_record(task)
            record.update(status="failed", error=str(error))
        except Exception as error:  # noqa: BLE001 - one odd video must not stop the batch
            log.exception("%s: unexpected error", task.input)
            record = base_record(task)
            record.update(status="failed", error=f"{type(error).__name__}: {error}")
        finally:
            with self._lock:
                self._current = None
        record["pid"] = os.getpid()
        record["task_seconds"] = time.monotonic() - started
        return record
