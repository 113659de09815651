"""Where ``edit``/``invert`` write, and which outputs they refuse before any work."""

from __future__ import annotations

from pathlib import Path

from vidinv.errors import InputFileError
from vidinv.io_safety import check_paths
from vidinv.models.folder import ModelBundle

VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov", ".m4v")
IMAGE_OUTPUT_SUFFIXES = (".png", ".jpg", ".jpeg")


def input_kind(path: Path) -> str:
    """``'video'``, ``'image'`` (one picture) or ``'folder'`` (a folder of pictures)."""
    from vidinv.video.images import IMAGE_SUFFIXES

    if path.is_dir():
        return "folder"
    return "image" if path.suffix.lower() in IMAGE_SUFFIXES else "video"


def default_output(input_path: Path, tag: str) -> Path:
    """Where ``edit``/``invert`` write when no ``-o`` is given: ``IN_tag.mp4`` for a video,
    ``IN_tag.png`` (``.jpg``) for a picture, ``IN_tag/`` for a folder of pictures."""
    kind = input_kind(input_path)
    if kind == "folder":
        return input_path.with_name(f"{input_path.name}_{tag}")
    if kind == "image":
        suffix = ".jpg" if input_path.suffix.lower() in (".jpg", ".jpeg") else ".png"
        return input_path.with_name(f"{input_path.stem}_{tag}{suffix}")
    return input_path.with_name(f"{input_path.stem}_{tag}.mp4")


def check_output(input_path: Path, output_path: Path, bundle: ModelBundle | None = None,
                  latents_path: Path | None = None) -> None:
    """Refuse, before any work, outputs that would destroy an input or each other."""
    kind = input_kind(input_path)
    if kind == "video" and output_path.suffix.lower() not in VIDEO_SUFFIXES:
        raise InputFileError(f"{output_path}: write to .mp4, .mkv, .mov or .m4v")
    if kind == "image" and output_path.suffix.lower() not in IMAGE_OUTPUT_SUFFIXES:
        raise InputFileError(f"{output_path}: the input is a picture; write to .png or .jpg")
    if kind == "folder" and output_path.exists() and (
            not output_path.is_dir() or any(output_path.iterdir())):
        raise InputFileError(f"{output_path}: exists and is not an empty folder; the input is "
                             "a folder of pictures, so give a new folder for the output")
    if latents_path is not None and latents_path.suffix.lower() != ".npz":
        raise InputFileError(f"--latents {latents_path}: the codes are written as an .npz "
                             "archive; name it e.g. codes.npz")
    reads = [("input", input_path)]
    if bundle is not None:
        reads.append(("model folder", bundle.folder))
    outputs = [("output", output_path)] if kind != "folder" else []
    folders = [("output", output_path)] if kind == "folder" else []
    check_paths(reads, [*outputs, ("--latents", latents_path)], folders)
