"""Live sources: a webcam, or a video file that behaves like one.

A live source captures on its own thread into a bounded buffer (1–2 frames) and, when the
consumer is slower than the source, drops the **oldest** buffered frame and counts it
(``dropped``), so what the consumer reads is always recent: the backlog, and with it the
latency, stays bounded by ``buffer_size`` frame intervals. (A file read with ``VideoReader``
instead blocks and loses nothing.)

Frames carry ``pts`` in microseconds (``time_base`` 1/1 000 000) of a monotonic clock, counted
from the source's creation; ``now_pts()`` reads the same clock, so ``now_pts() - frame.pts`` is
a frame's age. ``index`` counts captured frames, dropped ones included, so a gap in the indices
the consumer sees is where frames were dropped.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from types import TracebackType

import numpy as np

from vidinv.errors import BackendUnavailableError
from vidinv.frame import Frame
from vidinv.video.errors import CameraUnavailableError
from vidinv.video.reader import VideoInfo, VideoReader

MICROSECONDS = Fraction(1, 1_000_000)


class LiveSource:
    """A capture thread feeding a bounded drop-oldest buffer; subclasses supply ``_capture``.

    ``read(timeout=None)`` returns the oldest buffered frame (with ``buffer_size`` 1: the
    newest one), waiting for one if the buffer is empty; it returns ``None`` once the source
    has ended and the buffer is empty, and raises ``TimeoutError`` if ``timeout`` seconds pass
    without a frame. Iterating reads until the end. The thread starts on the first read (or
    ``start()``/``with``); ``close()`` stops it and releases the device or file.
    """

    time_base = MICROSECONDS

    def __init__(self, buffer_size: int = 2) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1 (got {buffer_size})")
        self.buffer_size = buffer_size
        self._buffer: collections.deque[Frame] = collections.deque(maxlen=buffer_size)
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._finished = False
        self._error: BaseException | None = None
        self._captured = 0
        self._dropped = 0
        self._clock_zero_ns = time.monotonic_ns()

    # -- clock and counters ----------------------------------------------------------------

    def now_pts(self) -> int:
        """The current time in this source's pts units (µs since the source was created)."""
        return (time.monotonic_ns() - self._clock_zero_ns) // 1000

    @property
    def dropped(self) -> int:
        """How many captured frames were dropped because the consumer was slower."""
        with self._cond:
            return self._dropped

    @property
    def captured(self) -> int:
        """How many frames were captured (delivered, buffered or dropped)."""
        with self._cond:
            return self._captured

    # -- capture thread --------------------------------------------------------------------

    def _capture(self) -> Iterator[tuple[np.ndarray, int | None]]:
        """Yield ([H,W,3] uint8 RGB, the file's frame index or None) at the source's pace until it
        ends or ``_stop``."""
        raise NotImplementedError

    def _release(self) -> None:
        """Free the device or file (called once the capture thread has stopped)."""

    def start(self) -> None:
        """Start the capture thread (``read`` and ``with`` call this)."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=self._run, name=f"{type(self).__name__}-capture", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        try:
            for image, source_index in self._capture():
                if self._stop.is_set():
                    break
                self._push(image, source_index)
        except BaseException as e:  # noqa: BLE001 - handed to the consumer by read()
            self._error = e
        finally:
            with self._cond:
                self._finished = True
                self._cond.notify_all()

    def _push(self, image: np.ndarray, source_index: int | None) -> None:
        frame = Frame(
            index=0, image=image, pts=self.now_pts(), time_base=self.time_base,
            source_index=source_index,
        )
        with self._cond:
            frame.index = self._captured
            self._captured += 1
            if len(self._buffer) == self.buffer_size:
                self._dropped += 1  # the deque's maxlen drops the oldest on append
            self._buffer.append(frame)
            self._cond.notify()

    # -- consumer side ---------------------------------------------------------------------

    def read(self, timeout: float | None = None) -> Frame | None:
        """The next buffered frame; None at the end; TimeoutError after ``timeout`` seconds."""
        self.start()
        with self._cond:
            if not self._cond.wait_for(lambda: self._buffer or self._finished, timeout):
                raise TimeoutError(f"{self!r} delivered no frame in {timeout} s")
            if self._buffer:
                return self._buffer.popleft()
            if self._error is not None:
                raise self._error
            return None

    def __iter__(self) -> Iterator[Frame]:
        while (frame := self.read()) is not None:
            yield frame

    def close(self) -> None:
        """Stop capturing, wait for the thread, and release the source."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        with self._cond:
            self._buffer.clear()
            self._finished = True
        self._release()

    def __enter__(self) -> LiveSource:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class FileCameraSource(LiveSource):
    """A video file played like a camera: real-time pace, drop-oldest buffer, monotonic pts.

    Frames are decoded on the capture thread and released at the file's own timestamps
    (``fps=None``) or at a fixed ``fps``; with ``loop`` the file restarts at its end. If
    decoding is slower than real time the source simply runs late. Each frame's ``source_index``
    is the file's frame it shows. The file is checked when the source is created (a
    bad file raises the reader's one-line error here).
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | None = None,
        loop: bool = False,
        *,
        buffer_size: int = 2,
    ) -> None:
        if fps is not None and fps <= 0:
            raise ValueError(f"fps must be positive (got {fps})")
        super().__init__(buffer_size=buffer_size)
        self.reader = VideoReader(path)
        self.path = self.reader.path
        self.fps = fps
        self.loop = loop
        rate = Fraction(fps) if fps else (self.reader.info.fps or Fraction(30))
        self.info = VideoInfo.for_frames(
            self.reader.info.width, self.reader.info.height, rate, time_base=MICROSECONDS
        )

    def __repr__(self) -> str:
        return f"FileCameraSource({str(self.path)!r}, fps={self.fps}, loop={self.loop})"

    def _capture(self) -> Iterator[tuple[np.ndarray, int | None]]:
        started = time.monotonic()
        pass_offset = 0.0  # seconds of playback before the current pass of the file
        released = 0
        while not self._stop.is_set():
            first_time: float | None = None
            pass_length = 0.0
            frames = iter(self.reader)
            try:
                for frame in frames:
                    if self.fps:
                        due = released / self.fps
                    else:
                        t = frame.time or 0.0
                        first_time = t if first_time is None else first_time
                        due = pass_offset + (t - first_time)
                        pass_length = t - first_time
                    delay = started + due - time.monotonic()
                    if delay > 0 and self._stop.wait(delay):
                        return
                    released += 1
                    yield frame.image, frame.index
            finally:
                frames.close()
            if not self.loop:
                return
            interval = 1 / float(self.reader.info.fps) if self.reader.info.fps else 1 / 30
            pass_offset += pass_length + interval


class WebcamSource(LiveSource):
    """A camera through OpenCV (``cv2.VideoCapture``), captured on a thread.

    ``width``/``height``/``fps`` are requests the driver may round; ``info`` holds what the
    camera actually delivers. A camera that cannot be opened raises
    ``CameraUnavailableError`` naming ``--source`` (a video file) as the alternative.
    """

    def __init__(
        self,
        index: int = 0,
        width: int | None = None,
        height: int | None = None,
        fps: float | None = None,
        *,
        buffer_size: int = 1,
    ) -> None:
        super().__init__(buffer_size=buffer_size)
        try:
            import cv2
        except ImportError as e:
            raise BackendUnavailableError(
                "OpenCV is needed for webcams; pip install opencv-python"
            ) from e
        self._cv2 = cv2
        self.index = index
        capture = cv2.VideoCapture(index)
        if not capture.isOpened():
            capture.release()
            raise CameraUnavailableError(
                f"no camera could be opened at index {index}; check it is connected and free, "
                "or run on a video file with --source PATH"
            )
        if width:
            capture.set(cv2.CAP_PROP_FRAME_WIDTH, width)
        if height:
            capture.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            capture.set(cv2.CAP_PROP_FPS, fps)
        self._capture_device = capture
        actual_fps = capture.get(cv2.CAP_PROP_FPS) or fps or 30
        self.info = VideoInfo.for_frames(
            int(capture.get(cv2.CAP_PROP_FRAME_WIDTH)) or (width or 0),
            int(capture.get(cv2.CAP_PROP_FRAME_HEIGHT)) or (height or 0),
            actual_fps,
            time_base=MICROSECONDS,
        )

    def __repr__(self) -> str:
        return f"WebcamSource({self.index}, {self.info.width}x{self.info.height})"

    def _capture(self) -> Iterator[tuple[np.ndarray, int | None]]:
        cv2 = self._cv2
        while not self._stop.is_set():
            ok, bgr = self._capture_device.read()
            if not ok or bgr is None:
                if self._stop.is_set():
                    return
                raise CameraUnavailableError(
                    f"camera {self.index} stopped delivering frames; reconnect it, or run on a "
                    "video file with --source PATH"
                )
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), None

    def _release(self) -> None:
        self._capture_device.release()
