"""A quiet terminal: native libraries' routine log lines never reach stderr unless asked for.

"Ours", precisely: after splitting stderr at every carriage return and newline, each piece is
empty or blank (tqdm clearing its line), a tqdm progress bar (:data:`PROGRESS`), or a message of
ours starting with ``vidinv: ``; and no piece looks like a native log line (:data:`NATIVE`:
absl/glog ``I0000 …``/``W…``/``E…``/``F…`` lines, TensorFlow Lite's ``INFO:``/``WARNING:``/
``ERROR:`` lines, onnxruntime's ``[W:onnxruntime…``, ffmpeg's ``[h264 @ 0x…]``).
"""

from __future__ import annotations

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from tests.media import make_video, real_clip_head
from tests.model_fixtures import make_tiny_model
from vidinv.native_log import NOISE_PATTERNS

PROGRESS = re.compile(r"^\S.*: +\d{1,3}%\|[^|]*\| *\d+/\d+ \[[^\]]*\]$")
NATIVE = re.compile(r"^(?:[IWEF]\d{4} |(?:INFO|WARNING|ERROR|FATAL): |\[[WEIV]:onnxruntime|"
                    r"\[\w+ @ 0x[0-9a-f]+\])")


def _pieces(stderr: str) -> list[str]:
    return [piece for piece in re.split(r"[\r\n]", stderr) if piece.strip()]


def _foreign(stderr: str) -> list[str]:
    """The pieces of stderr that are not ours."""
    return [piece for piece in _pieces(stderr)
            if NATIVE.match(piece) or not (PROGRESS.match(piece) or piece.startswith("vidinv: "))]


def _vidinv(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "vidinv.cli", *args], capture_output=True,
                          text=True, timeout=300, env=env)


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, timeout=60)


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture(scope="module")
def short_clip(tmp_path_factory) -> Path:
    """The first 10 frames of the real clip."""
    return real_clip_head(tmp_path_factory.mktemp("clip") / "talk.mp4", 10)


def test_the_issues_lines_are_noise_and_errors_are_not():
    issue_lines = [
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "WARNING: All log messages before absl::InitializeLog() is called are written to STDERR",
        "W0000 00:00:1795978060.635198    5645 inference_feedback_manager.cc:114] Feedback "
        "manager requires a model with a single signature inference. Disabling support for "
        "feedback tensors.",
        "W0000 00:00:1795978060.709303    5644 landmark_projection_calculator.cc:186] Using "
        "NORM_RECT without IMAGE_DIMENSIONS is only supported for the square ROI. Provide "
        "IMAGE_DIMENSIONS or use PROJECTION_MATRIX.",
    ]
    assert all(NATIVE.match(line) for line in issue_lines)  # the test's own pattern sees them
    kept = [
        # the same places at error level, other messages, crashes and our own lines
        issue_lines[2].replace("W0000", "E0000"),
        issue_lines[2].replace("W0000", "F0000"),
        "F0000 00:00:1795978060.1 5645 calculator_graph.cc:1] Check failed: x == y",
        "W0000 00:00:1795978060.1 5645 inference_feedback_manager.cc:114] Something else.",
        "ERROR: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "INFO: Created TensorFlow Lite XNNPACK delegate for CPU. And more",
        "Fatal Python error: Segmentation fault",
        "vidinv: error: no face found in clip.mp4",
    ]
    # through the running filter itself, one write per line as the native libraries do
    result = _python(f"""
        import os
        from vidinv.native_log import native_stderr_guard

        with native_stderr_guard():
            for line in {[*issue_lines, *kept]!r}:
                os.write(2, line.encode() + b"\\n")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr.splitlines() == kept, result.stderr
    assert len(NOISE_PATTERNS) == len(set(NOISE_PATTERNS))


def test_guard_drops_noise_and_passes_everything_else_in_order():
    result = _python(r"""
        import os, sys, threading, time, warnings
        from vidinv.native_log import native_stderr_guard

        os.write(2, b"before\n")
        with native_stderr_guard():
            with native_stderr_guard():  # nested, as two graphs created together
                os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
            # TFLite writes its prefix, message and newline separately (here slowly)
            for part in (b"INFO: ", b"Created TensorFlow Lite XNNPACK delegate for CPU.", b"\n"):
                os.write(2, part)
                time.sleep(0.2)
            os.write(2, b"E0000 00:00:17.5 42 calculator_graph.cc:928] real trouble\n")
            # another thread's progress bar (no newline) and warning while fd 2 is redirected
            def other():
                sys.stderr.write("\rbar 1/2")
                sys.stderr.flush()
                sys.stderr.write("\n")
                warnings.warn("a warning from a thread", stacklevel=1)
            thread = threading.Thread(target=other)
            thread.start()
            thread.join()
            os.write(2, b"W0000 00:00:17.6 43 inference_feedback_manager.cc:114] Feedback "
                        b"manager requires a model with a single signature inference. "
                        b"Disabling support for feedback tensors.\n")
            os.write(2, b"\rbar 2/2")
        os.write(2, b"\nafter\n")
    """)
    assert result.returncode == 0, result.stderr
    pieces = _pieces(result.stderr)
    assert pieces[3].endswith("UserWarning: a warning from a thread"), result.stderr
    assert pieces[:3] + pieces[4:] == [
        "before", "E0000 00:00:17.5 42 calculator_graph.cc:928] real trouble",
        "bar 1/2", "bar 2/2", "after"], result.stderr


def test_only_whole_lines_are_noise_a_real_line_keeps_its_end():
    """A routine message at the end of a real line is that line's text: the line passes whole
    (cutting the message off joined the line to the next one). A routine line written into a
    progress bar (text after a carriage return) is still dropped, the bar left as it was,
    however the writes reach the filter."""
    result = _python(r"""
        import os, time
        from vidinv.native_log import native_stderr_guard

        noise = b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"
        feedback = (b"W0000 00:00:17.6 43 inference_feedback_manager.cc:114] Feedback manager "
                    b"requires a model with a single signature inference. Disabling support "
                    b"for feedback tensors.\n")
        with native_stderr_guard():
            os.write(2, b"a real line ends with " + noise + b"next line\n")
            os.write(2, b"real text, then ")  # the rest of its line comes in another write
            os.write(2, feedback)
            os.write(2, b"after\n")
            os.write(2, b"\rbar 1/2")
            time.sleep(0.1)  # the bar is passed on as it is, then a routine line comes
            os.write(2, feedback)
            os.write(2, b"\rbar 2/2" + feedback)  # or both arrive in one read
            os.write(2, b"\rbar 3/3\n")
            os.write(2, noise + b"windows line\r\n" + noise.replace(b"\n", b"\r\n"))
            os.write(2, b"end\n")
    """)
    assert result.returncode == 0, result.stderr
    assert result.stderr.split("\n") == [  # text mode: \r and \r\n read as \n
        "a real line ends with INFO: Created TensorFlow Lite XNNPACK delegate for CPU.",
        "next line",
        "real text, then W0000 00:00:17.6 43 inference_feedback_manager.cc:114] Feedback "
        "manager requires a model with a single signature inference. Disabling support for "
        "feedback tensors.",
        "after", "", "bar 1/2", "bar 2/2", "bar 3/3", "windows line", "end", ""], result.stderr


def test_guard_passes_a_fatal_message_even_when_the_process_aborts():
    result = _python(r"""
        import os
        from vidinv.native_log import native_stderr_guard

        with native_stderr_guard():
            os.write(2, b"F0000 00:00:17.5 42 calculator_graph.cc:1] Check failed: a == b\n")
            os.abort()
    """)
    assert result.returncode != 0
    assert "Check failed: a == b" in result.stderr


def test_verbose_environment_turns_the_guard_off():
    result = _python(r"""
        import os
        from vidinv.native_log import native_stderr_guard, show_native_logs

        show_native_logs()
        with native_stderr_guard():
            os.write(2, b"INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n")
    """)
    assert result.stderr == "INFO: Created TensorFlow Lite XNNPACK delegate for CPU.\n"


def test_edit_and_invert_on_the_real_clip_print_only_ours(tmp_path, model, short_clip):
    edit = _vidinv("edit", str(short_clip), "--attr", "smile", "--model", str(model),
                   "-o", str(tmp_path / "edit.mp4"))
    assert edit.returncode == 0, edit.stderr
    assert any(PROGRESS.match(piece) for piece in _pieces(edit.stderr)), edit.stderr
    assert not _foreign(edit.stderr), edit.stderr
    invert = _vidinv("invert", str(short_clip), "--model", str(model),
                     "-o", str(tmp_path / "inv.mp4"), "--smooth", "none")
    assert invert.returncode == 0, invert.stderr
    assert not _foreign(invert.stderr), invert.stderr


def test_a_clip_without_a_face_prints_exactly_one_line(tmp_path, model):
    faceless = make_video(tmp_path / "pattern.mp4", n_frames=8, size=(96, 80)).path
    for command in (["edit", str(faceless), "--attr", "smile"], ["invert", str(faceless)]):
        result = _vidinv(*command, "--model", str(model), "-o", str(tmp_path / "out.mp4"))
        assert result.returncode == 2, result.stderr
        assert not _foreign(result.stderr), result.stderr
        lines = [piece for piece in _pieces(result.stderr) if not PROGRESS.match(piece)]
        assert len(lines) == 1 and lines[0].startswith("vidinv: error: no face"), result.stderr


def test_verbose_lets_the_native_lines_through(tmp_path, model):
    faceless = make_video(tmp_path / "pattern.mp4", n_frames=4, size=(96, 80)).path
    result = _vidinv("-v", "invert", str(faceless), "--model", str(model), "--quiet",
                     "-o", str(tmp_path / "out.mp4"))
    assert result.returncode == 2, result.stderr
    native = [piece for piece in _pieces(result.stderr) if NATIVE.match(piece)]
    assert native, result.stderr  # without -v the same run shows none (the test above)
    assert result.stderr.rstrip().splitlines()[-1].startswith("vidinv: error: no face")


def test_a_damaged_picture_is_one_line_without_the_decoders_own(tmp_path, model):
    """libpng and libjpeg print to fd 2 themselves (``libpng error: IHDR: CRC error``,
    ``Corrupt JPEG data: …``): only vidinv's one line reaches the terminal."""
    import cv2
    import numpy as np

    image = np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)
    png = bytearray(cv2.imencode(".png", image)[1].tobytes())
    png[20] ^= 1  # the width in IHDR: its checksum no longer matches
    (tmp_path / "bad.png").write_bytes(bytes(png))
    jpeg = cv2.imencode(".jpg", image)[1].tobytes()
    (tmp_path / "extra.jpg").write_bytes(jpeg[:-2] + b"\0\0\0" + jpeg[-2:])  # still decodes
    for name, error in (("bad.png", f"{tmp_path / 'bad.png'} is a damaged PNG (checksum error "
                                     "in its 'IHDR' chunk); re-export or re-copy it"),
                        ("extra.jpg", f"no face found in {tmp_path / 'extra.jpg'} (in 1 frame)")):
        result = _vidinv("invert", str(tmp_path / name), "--model", str(model), "--quiet",
                         "-o", str(tmp_path / f"out_{name}.png"))
        assert result.returncode == 2, result.stderr
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("vidinv: error: " + error), result.stderr
