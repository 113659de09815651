"""Running a batch: one progress bar across the videos, a line per video, the summary.

:func:`run_tasks` drives an executor over the tasks and returns the records in task order;
:func:`summary_table` and :func:`write_report` turn them into the printed table and the JSON
(``{"engine", "workers", "seconds", "videos_per_minute", "counts", "videos": [records]}``).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vidinv.batch.files import Task, remove_partials
from vidinv.batch.worker import SKIPPED_NOTE


def _line(record: dict[str, Any]) -> str:
    name = record["name"]
    status = record.get("status")
    if status == "skipped":
        return f"{name}: {record.get('note') or SKIPPED_NOTE}"
    if status != "ok":
        return f"{name}: failed: {record.get('error')}"
    redone = f" ({record['note']})" if record.get("note") else ""
    return (f"{name}: {record.get('frames')} frames in {record.get('seconds') or 0:.1f} s "
            f"→ {record['output']}{redone}")


def run_tasks(tasks: Sequence[Task], executor, *, progress: bool = True,
              echo: Callable[[str], None] | None = None,
              line: Callable[[dict[str, Any]], str] = _line,
              ) -> tuple[list[dict[str, Any]], float]:
    """Every task through ``executor`` (started here, closed at the end, also on Ctrl-C).

    Returns (records in task order, wall seconds). ``echo`` gets one line per finished
    video (``line(record)``), printed above the progress bar.
    """
    from tqdm import tqdm

    started = time.monotonic()
    by_name: dict[str, dict[str, Any]] = {}
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    with tqdm(total=len(tasks), unit="video", desc="videos", disable=not progress,
              dynamic_ncols=True) as bar:
        try:
            if not executor.started:
                executor.start(len(tasks))
            for record in executor.run(tasks):
                by_name[record["name"]] = record
                counts[record["status"]] = counts.get(record["status"], 0) + 1
                if echo is not None:
                    text = line(record)
                    if progress:
                        bar.write(text)
                    else:
                        echo(text)
                bar.set_postfix(counts, refresh=False)
                bar.update()
        except BaseException:
            # Ctrl-C (or a failure of the executor): stop the workers, then delete what the
            # stopped videos had half-written (their hidden temporary files)
            executor.close()
            for task in tasks:
                if task.name not in by_name:
                    remove_partials(task.output)
            raise
        executor.close()
    records = [by_name[task.name] for task in tasks if task.name in by_name]
    return records, time.monotonic() - started


def counts_of(records: Sequence[dict[str, Any]]) -> dict[str, int]:
    counts = {"ok": 0, "failed": 0, "skipped": 0}
    for record in records:
        counts[record["status"]] = counts.get(record["status"], 0) + 1
    return counts


def summary_table(records: Sequence[dict[str, Any]]) -> str:
    """One row per video: name, status, frames, seconds, fps, face share, then the error or
    note (left-aligned, last, so that long messages do not widen the numbers)."""
    def cell(value: Any, spec: str) -> str:
        return "" if value is None else spec.format(value)

    header = ["video", "status", "frames", "seconds", "fps", "face", "note"]
    rows = []
    for record in records:
        metrics = record.get("metrics") or {}
        note = record.get("error") or record.get("note")
        rows.append([record["name"], record["status"], cell(record.get("frames"), "{}"),
                     cell(record.get("seconds"), "{:.1f}"), cell(record.get("fps"), "{:.1f}"),
                     cell(metrics.get("face_share"), "{:.0%}"), note or ""])
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header) - 1)]

    def line(row: list[str]) -> str:
        cells = [row[0].ljust(widths[0]), row[1].ljust(widths[1]),
                 *(c.rjust(w) for c, w in zip(row[2:-1], widths[2:], strict=True)), row[-1]]
        return "  ".join(cells).rstrip()

    return "\n".join([line(header), "-" * len(line(header)), *(line(row) for row in rows)])


def write_report(path: Path, records: Sequence[dict[str, Any]], seconds: float,
                 executor_name: str, workers: int, **extra: Any) -> dict[str, Any]:
    """The batch JSON (atomically): engine, wall time, counts, videos per minute, records."""
    from vidinv.io_safety import write_atomically

    counts = counts_of(records)
    done = counts["ok"] + counts["failed"]
    report = {"engine": executor_name, "workers": workers, "seconds": seconds,
              "videos_per_minute": 60.0 * done / seconds if seconds > 0 and done else None,
              "counts": counts, **extra, "videos": list(records)}
    write_atomically(path, json.dumps(report, indent=2, allow_nan=False) + "\n")
    return report
