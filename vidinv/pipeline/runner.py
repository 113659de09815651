"""Run stage segments in threads joined by bounded queues; output order is input order.

    source thread ─q─► segment 1 thread ─q─► … ─q─► sink (the calling thread)

Each segment is a list of stages applied as a chain of generators. Queues are bounded, so
memory does not grow with the video's length: a slow consumer makes producers wait (a file
source loses nothing; a live source drops its own oldest frames, see
:mod:`vidinv.video.sources`). An exception in any thread stops every thread and is re-raised
in the caller; so is Ctrl-C, which arrives in the calling thread.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Protocol

from vidinv.frame import Frame

_END = object()
_POLL_SECONDS = 0.1


class Stage(Protocol):
    latency: int

    def __call__(self, frames: Iterable[Frame]) -> Iterator[Frame]: ...


@dataclass
class RunStats:
    """What a run did: frames out, wall time, and the CPU time the whole process spent meanwhile
    (every thread, native pools included)."""

    frames: int = 0
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0


class _Stopped(Exception):
    """Raised inside a worker when another thread failed or the run was interrupted."""


class _Channel:
    """A bounded queue whose put/get give up when the run is stopped.

    With ``handoff``, :meth:`put` returns only once the consumer has taken the item: the
    producer cannot run ahead and start on a frame that would then wait in the queue.
    """

    def __init__(self, size: int, stop: threading.Event, handoff: bool = False) -> None:
        self._queue: queue.Queue = queue.Queue(maxsize=size)
        self._stop = stop
        self._handoff = handoff

    def put(self, item: object) -> None:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                self._queue.put(item, timeout=_POLL_SECONDS)
                break
            except queue.Full:
                continue
        if self._handoff and item is not _END:
            with self._queue.all_tasks_done:
                while self._queue.unfinished_tasks:
                    if self._stop.is_set():
                        raise _Stopped
                    self._queue.all_tasks_done.wait(timeout=_POLL_SECONDS)

    def get(self) -> object:
        while True:
            if self._stop.is_set():
                raise _Stopped
            try:
                item = self._queue.get(timeout=_POLL_SECONDS)
            except queue.Empty:
                continue
            self._queue.task_done()
            return item

    def drain(self) -> Iterator[Frame]:
        while (item := self.get()) is not _END:
            yield item  # type: ignore[misc]


def chain(stages: Sequence[Stage], frames: Iterable[Frame]) -> Iterator[Frame]:
    """Apply ``stages`` in order to ``frames`` (lazily)."""
    stream: Iterable[Frame] = frames
    for stage in stages:
        stream = stage(stream)
    return iter(stream)


def run_threaded(source: Iterable[Frame], segments: Sequence[Sequence[Stage]],
                 sink: Callable[[Frame], None], *, queue_size: int = 4,
                 source_thread: bool = True, handoff: bool = False) -> RunStats:
    """Stream ``source`` through ``segments`` (one thread each) into ``sink``.

    The source is iterated in its own thread (``source_thread``), or, for a live source that
    buffers and drops frames itself, directly by the first segment. With ``handoff`` (live) a
    thread hands each frame over and waits until the next thread has taken it before it
    starts on another, so the first segment pulls the newest camera frame only when it can
    go on at once, and no frame grows stale in a queue. ``sink`` is called in the calling
    thread, frame by frame, in input order. Returns the run's statistics.
    """
    stop = threading.Event()
    errors: list[BaseException] = []
    channels = [_Channel(queue_size, stop, handoff) for _ in range(len(segments) + 1)]

    def guard(work: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            try:
                work()
            except _Stopped:
                pass
            except BaseException as error:  # handed to the caller, which re-raises it
                errors.append(error)
                stop.set()
        return run

    def produce() -> None:
        for frame in source:
            channels[0].put(frame)
        channels[0].put(_END)

    def segment_worker(index: int) -> Callable[[], None]:
        def work() -> None:
            inputs = channels[index].drain() if index or source_thread else iter(source)
            outputs = chain(segments[index], inputs)
            while True:
                frame = next(outputs, _END)
                channels[index + 1].put(frame)
                if frame is _END:
                    return
        return work

    threads = [threading.Thread(target=guard(produce), name="vidinv-source", daemon=True)
               ] if source_thread else []
    threads += [threading.Thread(target=guard(segment_worker(i)), name=f"vidinv-segment-{i}",
                                 daemon=True) for i in range(len(segments))]
    stats = RunStats()
    start, cpu_start = time.perf_counter(), time.process_time()
    for thread in threads:
        thread.start()
    try:
        for frame in channels[-1].drain():
            sink(frame)
            stats.frames += 1
    except _Stopped:
        pass
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=10)
    if errors:
        raise errors[0]
    stats.seconds = time.perf_counter() - start
    stats.cpu_seconds = time.process_time() - cpu_start
    return stats
