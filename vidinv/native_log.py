"""Keep native libraries' routine log lines off the terminal, and nothing else.

MediaPipe's C++ side (absl logging, TensorFlow Lite) writes to file descriptor 2 itself when a
graph is created and on its first inference (``INFO: Created TensorFlow Lite XNNPACK delegate``,
``W0000 … inference_feedback_manager.cc:114] …``), from MediaPipe's own threads, and none of its
settings can turn that off (``GLOG_minloglevel``, ``TF_CPP_MIN_LOG_LEVEL`` and
``ABSL_MIN_LOG_LEVEL`` have no effect on mediapipe 0.10). Python's ``logging`` never sees it.

:func:`native_stderr_guard` points fd 2 at a pipe for the duration of a ``with`` block (graph
creation, first inference). A small filter process reads the pipe and writes everything that is
not a known routine line (:data:`NOISE_PATTERNS`) to the original stderr as it arrives, so:

* other threads' output (the progress bar, warnings, our messages) written to fd 2 meanwhile
  still appears, at most a few tens of milliseconds late;
* errors (``E…``/``F…`` levels, ``Check failed``, a crash dump, anything unknown) are passed on;
  since the filter is a separate process it passes them on even when this process aborts
  inside the block;
* leaving the block waits until the filter has written what the block produced, so output
  keeps its order.

Blocks may overlap and nest across threads: fd 2 is redirected while at least one is open.
Setting the environment variable ``VIDINV_NATIVE_LOGS=all`` (``vidinv -v`` does) turns the
guard into a no-op; child processes inherit the setting. Nothing happens at import: the filter
process starts at the first guarded block and stops when this process exits.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import secrets
import select
import subprocess
import sys
import threading
from collections.abc import Iterator

ENV_VAR = "VIDINV_NATIVE_LOGS"

#: Whole native lines (without the newline) known to be routine; anything else is passed on.
#: The first four are what mediapipe 0.10.21's face detection and face mesh print on CPU.
#: They are dropped only inside :func:`native_stderr_guard` blocks.
#: glog/absl lines look like ``W0000 00:00:1795978060.635198    5645 file.cc:114] message``.
_GLOG = r"[IW]\d{4} [\d:.]+ +\d+ "
NOISE_PATTERNS: tuple[str, ...] = (
    r"INFO: Created TensorFlow Lite XNNPACK delegate for CPU\.",
    r"WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR",
    _GLOG + r"inference_feedback_manager\.cc:\d+\] Feedback manager requires a model with a "
    r"single signature inference\. Disabling support for feedback tensors\.",
    _GLOG + r"landmark_projection_calculator\.cc:\d+\] Using NORM_RECT without IMAGE_DIMENSIONS "
    r"is only supported for the square ROI\. Provide IMAGE_DIMENSIONS or use "
    r"PROJECTION_MATRIX\.",
    _GLOG + r"gl_context(_egl)?\.cc:\d+\] .*",  # where an OpenGL context exists (GL version…)
    # OpenCV's picture decoders (vidinv.video.images.read_image, which says in one line when
    # a picture does not decode): libpng's and libjpeg's own complaints
    r"libpng (?:warning|error): .*",
    r"Corrupt JPEG data: .*",
    r"Premature end of JPEG file",
)

# The filter process: stdin is the pipe, stdout acknowledges sync tokens, stderr is the original
# fd 2. Standard library only, run with -I -S so it starts fast and ignores the environment.
# A partial line (a progress bar) is passed on once nothing more came for 30 ms.
# Only a whole line is classified: one that starts where a line starts (the stream's start or
# after a newline) and ends with its newline. Noise at the end of other text is that text's line,
# passed on whole (cutting it off would join the text to the next line). The one exception is a
# carriage-return display (a progress bar: text after a \r), which the terminal redraws anyway:
# a routine line written into it, in the same read or after the display was passed on, is cut
# out whichever way the writes were split.
_FILTER_SOURCE = r"""
import os, re, select, signal, sys
signal.signal(signal.SIGINT, signal.SIG_IGN)
token = sys.argv[1].encode()
noise = re.compile(rb"(?:" + b"|".join(a.encode() for a in sys.argv[2:]) + rb")\r?\n")
noise_at_end = re.compile(noise.pattern + rb"\Z")
# TensorFlow Lite writes "INFO: ", the message and "\n" separately: wait longer for the rest
tflite_start = re.compile(rb"(?:INFO|WARNING): [^\r\n]*\Z")
# a line with its end (\r\n, \n or \r), or the unfinished rest
segment = re.compile(rb"[^\r\n]*(?:\r\n|\n|\r)|[^\r\n]+")
pending = b""
# where the output stands: "start" of a line, inside a "bar" (text after a \r), inside "text"
where = "start"

def emit(data):
    global where
    kept = []
    for piece in segment.findall(data):
        if where == "start" and noise.fullmatch(piece):
            continue
        if where == "bar" and (found := noise_at_end.search(piece)):
            # a progress display redrawn after each \r: a routine line written into it is cut
            # out, the display left unfinished for its next redraw
            if found.start():
                kept.append(piece[:found.start()])
            continue
        kept.append(piece)
        if piece.endswith(b"\n"):
            where = "start"
        elif piece.endswith(b"\r"):
            where = "bar"
        elif where == "start":
            where = "text"
    data = b"".join(kept)
    while data:
        data = data[os.write(2, data):]

while True:
    wait = (1.0 if tflite_start.search(pending) else 0.03) if pending else None
    ready, _, _ = select.select([0], [], [], wait)
    if not ready:  # a partial line (a progress bar) that waited long enough
        emit(pending)
        pending = b""
        continue
    chunk = os.read(0, 65536)
    if not chunk:
        break
    pending += chunk
    synced = token in pending
    pending = pending.replace(token, b"")
    cut = len(pending) if synced else pending.rfind(b"\n") + 1
    emit(pending[:cut])
    pending = pending[cut:]
    if synced:
        os.write(1, b"k")
emit(pending)
"""

def native_logs_shown() -> bool:
    """True when native logs should pass untouched (``VIDINV_NATIVE_LOGS=all``, ``vidinv -v``)."""
    return os.environ.get(ENV_VAR, "").strip().lower() in ("all", "1", "yes", "true")


def show_native_logs(show: bool = True) -> None:
    """Let native libraries' logs through (or filter them again), here and in child processes."""
    if show:
        os.environ[ENV_VAR] = "all"
    else:
        os.environ.pop(ENV_VAR, None)


class _Filter:
    """The filter process and the pipe into it."""

    def __init__(self) -> None:
        self.target = _identity(2)  # the stderr the filter writes to (inherited fd 2)
        self.token = f"<vidinv-sync-{secrets.token_hex(8)}>".encode()
        self.process = subprocess.Popen(
            [sys.executable, "-I", "-S", "-c", _FILTER_SOURCE, self.token.decode(),
             *NOISE_PATTERNS],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, process_group=0)
        assert self.process.stdin is not None and self.process.stdout is not None
        self.write_fd = self.process.stdin.fileno()
        self.ack_fd = self.process.stdout.fileno()

    def alive(self) -> bool:
        return self.process.poll() is None

    def sync(self, timeout: float = 5.0) -> None:
        """Wait until the filter has written everything sent before this call."""
        try:
            os.write(2, self.token)  # fd 2 is still the pipe; one write, so never split
            ready, _, _ = select.select([self.ack_fd], [], [], timeout)
            if ready:
                os.read(self.ack_fd, 1)
        except OSError:
            pass

    def close(self) -> None:
        with contextlib.suppress(OSError):
            assert self.process.stdin is not None
            self.process.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.process.wait(timeout=5)
        with contextlib.suppress(OSError):
            assert self.process.stdout is not None
            self.process.stdout.close()


def _flush_python_streams() -> None:
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()


class _Redirect:
    """fd 2 pointed at the filter while at least one guarded block (in any thread) is open."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.depth = 0
        self.saved: int | None = None  # a dup of the original fd 2 while redirected
        self.filter: _Filter | None = None
        self.atexit_registered = False

    def _ready_filter(self) -> _Filter | None:
        current = self.filter
        if current is not None and current.alive() and current.target == _identity(2):
            return current
        self.filter = None
        if current is not None:  # it died, or fd 2 was pointed elsewhere since: follow fd 2
            current.close()
        try:
            self.filter = _Filter()
        except (OSError, ValueError):
            return None  # cannot start a filter: leave stderr alone
        if not self.atexit_registered:
            atexit.register(self.close)
            self.atexit_registered = True
        return self.filter

    def enter(self) -> bool:
        with self.lock:
            if self.depth == 0:
                filter_ = self._ready_filter()
                if filter_ is None:
                    return False
                _flush_python_streams()
                self.saved = os.dup(2)
                os.dup2(filter_.write_fd, 2)
            self.depth += 1
            return True

    def exit(self) -> None:
        with self.lock:
            self.depth -= 1
            if self.depth > 0 or self.saved is None:
                return
            _flush_python_streams()
            if self.filter is not None:
                self.filter.sync()
            os.dup2(self.saved, 2)
            os.close(self.saved)
            self.saved = None

    def close(self) -> None:
        """Stop the filter (at exit); it writes what it still holds first."""
        with self.lock:
            current, self.filter = self.filter, None
        if current is not None:
            current.close()


_redirect = _Redirect()


@contextlib.contextmanager
def native_stderr_guard() -> Iterator[None]:
    """Filter known routine native log lines out of fd 2 while the block runs.

    Thread-safe and re-entrant. A no-op when :func:`native_logs_shown`, or when fd 2 is not
    open. What the block writes that is not noise reaches the original stderr before the
    block is left.
    """
    if os.name != "posix" or native_logs_shown() or not _fd_open(2):
        yield
        return
    entered = _redirect.enter()
    try:
        yield
    finally:
        if entered:
            _redirect.exit()


def _identity(fd: int) -> tuple[int, int]:
    stat = os.fstat(fd)
    return stat.st_dev, stat.st_ino


def _fd_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True
