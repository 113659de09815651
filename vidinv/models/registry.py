"""Registry of public checkpoints and the one place that downloads them (`vidinv models pull`).

The registry is data: a tuple of frozen `RegistryEntry` records. `pull(name)` downloads an entry
into the cache (`default_cache_dir()`), resumes an interrupted download with an HTTP Range
request, and verifies size and sha256 before the file is moved into place; a file that fails
verification is never left behind under its final name.

Checksums. Entries whose sha256 is known are pinned here. For an entry with ``sha256=None`` the
first download is trusted: its hash is recorded next to the file in ``<file>.sha256.json`` and
every later verification (and re-download) must match it. Delete that sidecar to accept a new
upstream file on purpose.

Checkpoints that are not listed, because their official download is a Google Drive page and not a
stable direct URL:

- FFHQ StyleGAN2 config-f 1024 in rosinality format (``stylegan2-ffhq-config-f.pt``, from
  rosinality/stylegan2-pytorch's README, or ``ffhq.pt`` from pSp/e4e);
- the official Feature-Style Encoder ``143_enc.pth`` (InterDigitalInc/FeatureStyleEncoder's
  ``download_models.sh`` fetches it from Google Drive with ``gdown``; its licence allows
  evaluation only).

Download those by hand from the project pages and convert them into vidinv's format (safetensors
plus a JSON of constructor arguments) with ``vidinv models convert``, e.g.
``vidinv models convert stylegan2-ffhq-config-f.pt`` or ``vidinv models convert 143_enc.pth``;
the converter recognises the format from the checkpoint's keys. The NVIDIA StyleGAN2-ADA pickle
below has a direct URL and goes through the same converter after it is pulled.

Nothing here runs at import: no directories are created and the environment is read only when a
function is called.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import sys
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from tqdm import tqdm

from vidinv import __version__
from vidinv.errors import DownloadError, InputFileError
from vidinv.io_safety import write_atomically

__all__ = [
    "REGISTRY",
    "RegistryEntry",
    "default_cache_dir",
    "download",
    "installed",
    "list_entries",
    "pull",
]


@dataclass(frozen=True)
class RegistryEntry:
    """One downloadable checkpoint.

    Attributes:
        name: the name users type (`vidinv models pull NAME`); unique in a registry.
        url: a direct HTTP(S) URL (no redirect pages, no Google Drive).
        filename: the file's name in the cache directory; unique in a registry.
        kind: what the file holds, which picks the loader/converter: ``"stylegan2-ada-pkl"``
            (NVIDIA pickle), ``"stylegan2-rosinality-pt"``, ``"fse-encoder"``,
            ``"interfacegan-direction"`` (a torch-saved tensor).
        size: expected size in bytes, or None when unknown.
        sha256: expected lowercase hex sha256, or None (the first download pins it in the cache).
        description: one line for `vidinv models list`.
        licence: the licence the weights are published under, in a few words.
    """

    name: str
    url: str
    filename: str
    kind: str
    size: int | None
    sha256: str | None
    description: str
    licence: str


_E4E_COMMIT = "99ea50578695d2e8a1cf7259d8ee89b23eea942b"
_E4E_DIRECTIONS = (
    f"https://raw.githubusercontent.com/omertov/encoder4editing/{_E4E_COMMIT}"
    "/editings/interfacegan_directions"
)

REGISTRY: tuple[RegistryEntry, ...] = (
    RegistryEntry(
        name="stylegan2-ffhq-1024",
        url="https://nvlabs-fi-cdn.nvidia.com/stylegan2-ada-pytorch/pretrained/ffhq.pkl",
        filename="stylegan2-ada-ffhq-1024.pkl",
        kind="stylegan2-ada-pkl",
        size=None,
        sha256=None,
        description="FFHQ StyleGAN2 config-f 1024 px, NVIDIA StyleGAN2-ADA pickle "
        "(convert with `vidinv models convert`)",
        licence="NVIDIA Source Code License-NC (non-commercial)",
    ),
    # e4e's InterFaceGAN directions, pinned to a commit; hashes and sizes taken from the blobs at
    # that commit. age/smile: [1,512] float32 (W); pose: [1,18,512] float32 (W+, the same vector
    # on every layer), saved from CUDA, so load with map_location="cpu".
    RegistryEntry(
        name="e4e-interfacegan-age",
        url=f"{_E4E_DIRECTIONS}/age.pt",
        filename="e4e-interfacegan-age.pt",
        kind="interfacegan-direction",
        size=2808,
        sha256="50074516b1629707d89b5e43d6b8abd1792212fa3b961a87a11323d6a5222ae0",
        description="InterFaceGAN age direction for FFHQ StyleGAN2, from e4e ([1,512])",
        licence="MIT (omertov/encoder4editing)",
    ),
    RegistryEntry(
        name="e4e-interfacegan-smile",
        url=f"{_E4E_DIRECTIONS}/smile.pt",
        filename="e4e-interfacegan-smile.pt",
        kind="interfacegan-direction",
        size=2808,
        sha256="817a7e732b59dee9eba862bec8bd7e8373568443bc9f9731a21cf9b0356f0653",
        description="InterFaceGAN smile direction for FFHQ StyleGAN2, from e4e ([1,512])",
        licence="MIT (omertov/encoder4editing)",
    ),
    RegistryEntry(
        name="e4e-interfacegan-pose",
        url=f"{_E4E_DIRECTIONS}/pose.pt",
        filename="e4e-interfacegan-pose.pt",
        kind="interfacegan-direction",
        size=37624,
        sha256="736e0eacc8488fa0b020a2e7bd256b957284c364191dfea693705e5d06d43e7d",
        description="InterFaceGAN pose direction for FFHQ StyleGAN2, from e4e ([1,18,512])",
        licence="MIT (omertov/encoder4editing)",
    ),
)

_SIDECAR_SUFFIX = ".sha256.json"
_HASH_BLOCK = 1 << 20


def default_cache_dir() -> Path:
    """Where pulled checkpoints live.

    ``$VIDINV_CACHE`` if set, else ``$XDG_CACHE_HOME/vidinv`` (when that is an absolute path),
    else ``~/.cache/vidinv``. The directory is not created here.
    """
    explicit = os.environ.get("VIDINV_CACHE")
    if explicit:
        folder = Path(explicit).expanduser()
        if folder.exists() and not folder.is_dir():
            raise InputFileError(f"VIDINV_CACHE={explicit} is a file, not a folder; point it at "
                                 "a folder (or unset it for ~/.cache/vidinv)")
        return folder
    xdg = os.environ.get("XDG_CACHE_HOME")
    if xdg and Path(xdg).is_absolute():
        return Path(xdg) / "vidinv"
    return Path.home() / ".cache" / "vidinv"


def list_entries(registry: Sequence[RegistryEntry] | None = None) -> tuple[RegistryEntry, ...]:
    """All registry entries, in registry order (`registry` replaces the built-in one)."""
    return tuple(REGISTRY if registry is None else registry)


def installed(
    cache_dir: Path | None = None, *, registry: Sequence[RegistryEntry] | None = None
) -> list[tuple[RegistryEntry, Path]]:
    """Entries whose file is present in the cache, with its path.

    Presence only: the files are not hashed here (`pull` verifies). A ``.part`` file from an
    interrupted download does not count.
    """
    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    found = []
    for entry in list_entries(registry):
        path = root / entry.filename
        if path.is_file():
            found.append((entry, path))
    return found


def _stderr_line(message: str) -> None:
    print(message, file=sys.stderr)


def pull(
    name: str,
    cache_dir: Path | None = None,
    progress: bool = True,
    *,
    registry: Sequence[RegistryEntry] | None = None,
    notify: Callable[[str], None] | None = _stderr_line,
) -> Path:
    """Make sure the checkpoint `name` is in the cache, verified, and return its path.

    A file already present is verified (size, and sha256 when one is pinned) and returned
    without downloading; a present file that fails verification raises instead of being
    replaced silently. For an entry with ``sha256=None`` the hash of the first download (or of a
    file found in the cache with no record) is written to ``<file>.sha256.json`` and pinned from
    then on; `notify` is told so, in one line.

    Args:
        name: a registry name, see `list_entries()`.
        cache_dir: cache directory; `default_cache_dir()` when None.
        progress: show a progress bar while downloading.
        registry: entries to look `name` up in; the built-in `REGISTRY` when None.
        notify: receives one-line messages for the user (hash recorded); None for silence.

    Raises:
        InputFileError: `name` is not in the registry (the message lists the known names).
        DownloadError: the download failed or a file does not match its expected hash.
    """
    entries = list_entries(registry)
    entry = next((e for e in entries if e.name == name), None)
    if entry is None:
        known = ", ".join(e.name for e in entries) or "(none)"
        raise InputFileError(f"unknown model {name!r}; known models: {known}")

    root = default_cache_dir() if cache_dir is None else Path(cache_dir)
    dest = root / entry.filename
    sidecar = dest.with_name(dest.name + _SIDECAR_SUFFIX)
    pinned = entry.sha256.lower() if entry.sha256 else _read_sidecar(sidecar)
    say = notify if notify is not None else _ignore

    if dest.is_file():
        actual = _verify_cached(dest, entry.size, pinned, sidecar)
        if pinned is None:
            _write_sidecar(sidecar, entry, actual, dest.stat().st_size)
            say(
                f"{entry.name}: no published sha256; recorded {actual} for the file already "
                f"in {dest} and pinned it in {sidecar.name}"
            )
        return dest

    _, actual = _download(
        entry.url,
        dest,
        expected_size=entry.size,
        expected_sha256=pinned,
        progress=progress,
        chunk=1 << 20,
        timeout=30,
    )
    if pinned is None:
        _write_sidecar(sidecar, entry, actual, dest.stat().st_size)
        say(
            f"{entry.name}: no published sha256; recorded {actual} on first download and "
            f"pinned it in {sidecar.name} (later downloads must match; delete it to re-pin)"
        )
    return dest


def download(
    url: str,
    dest: Path,
    *,
    expected_size: int | None,
    expected_sha256: str | None,
    progress: bool = True,
    chunk: int = 1 << 20,
    timeout: float = 30,
) -> Path:
    """Download `url` to `dest`, verified, atomically; resume a partial download.

    Bytes go to ``dest + ".part"``. An existing ``.part`` is continued with an HTTP Range
    request; a server that ignores Range (answers 200) is downloaded again from the start. After
    the last byte the size and sha256 are checked (each only if expected) and only then the file
    is renamed to `dest` with `os.replace`, so `dest` is either absent or complete and verified.

    Args:
        url: a direct HTTP(S) URL.
        dest: final path; its parent directory is created.
        expected_size: size in bytes, or None to skip the size check.
        expected_sha256: lowercase hex sha256, or None to skip the hash check.
        progress: show a tqdm progress bar on stderr.
        chunk: bytes per read.
        timeout: seconds to wait for the connection and for each read.

    Raises:
        DownloadError: a network error (the ``.part`` is kept, re-running resumes) or a size or
            hash mismatch (the ``.part`` is deleted).
    """
    path, _ = _download(
        url,
        Path(dest),
        expected_size=expected_size,
        expected_sha256=expected_sha256,
        progress=progress,
        chunk=chunk,
        timeout=timeout,
    )
    return path


def _ignore(message: str) -> None:
    del message


def _download(
    url: str,
    dest: Path,
    *,
    expected_size: int | None,
    expected_sha256: str | None,
    progress: bool,
    chunk: int,
    timeout: float,
) -> tuple[Path, str]:
    """`download`, also returning the sha256 of the bytes it verified."""
    scheme = urllib.parse.urlsplit(str(url)).scheme.lower()
    if scheme not in ("http", "https"):
        given = f"{scheme}:" if scheme else "a bare path"
        raise DownloadError(f"{url}: only http(s) URLs are downloaded, not {given}; copy a "
                            "local file into place yourself")
    expected_sha256 = expected_sha256.lower() if expected_sha256 else None
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_suffix(dest.suffix + ".part")

    offset = part.stat().st_size if part.is_file() else 0
    if expected_size is not None and offset > expected_size:
        part.unlink()
        offset = 0

    if expected_size is None or offset < expected_size:
        _fetch_into(url, part, offset, expected_size, progress, chunk, timeout, dest.name)

    size = part.stat().st_size
    if expected_size is not None and size != expected_size:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{dest.name}: size mismatch, expected {expected_size} bytes, got {size} from {url}; "
            "the partial file was deleted, re-run to download again"
        )
    actual = _sha256_of(part)
    if expected_sha256 is not None and actual != expected_sha256:
        part.unlink(missing_ok=True)
        raise DownloadError(
            f"{dest.name}: sha256 mismatch, expected {expected_sha256}, got {actual} from {url}; "
            "the download was deleted, re-run to try again and report the URL if it persists"
        )
    os.replace(part, dest)
    return dest, actual


def _fetch_into(
    url: str,
    part: Path,
    offset: int,
    expected_size: int | None,
    progress: bool,
    chunk: int,
    timeout: float,
    label: str,
) -> None:
    """Append the bytes of `url` from `offset` to `part` (or rewrite it if the server restarts).

    Leaves `part` holding everything received so far, also when it raises.
    """
    headers = {"User-Agent": f"vidinv/{__version__}", "Accept-Encoding": "identity"}
    if offset:
        headers["Range"] = f"bytes={offset}-"
    request = urllib.request.Request(url, headers=headers)
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        if error.code == 416 and offset and _range_total(error.headers) == offset:
            return  # the .part already holds the whole file
        if error.code == 416 and offset:
            part.unlink(missing_ok=True)  # the .part does not fit this file: start over
            _fetch_into(url, part, 0, expected_size, progress, chunk, timeout, label)
            return
        raise DownloadError(
            f"{label}: HTTP {error.code} {error.reason} from {url}; check the URL or try later"
        ) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as error:
        reason = getattr(error, "reason", error)
        raise DownloadError(
            f"{label}: cannot reach {url} ({reason}); check the network and re-run "
            "(a partial download resumes)"
        ) from None

    with response:
        if offset and response.status == 206 and _range_start(response.headers) == offset:
            mode = "ab"
        else:
            offset = 0  # the server ignored Range (or answered another range): start over
            mode = "wb"
        length = response.headers.get("Content-Length")
        total = offset + int(length) if length and length.isdigit() else expected_size
        if expected_size is not None and total is not None and total != expected_size:
            raise DownloadError(
                f"{label}: the server offers {total} bytes but {expected_size} are expected "
                f"from {url}; the file upstream changed or the URL is wrong"
            )
        received = offset
        with (
            open(part, mode) as sink,
            tqdm(
                total=total,
                initial=offset,
                unit="B",
                unit_scale=True,
                unit_divisor=1024,
                desc=label,
                disable=not progress,
            ) as bar,
        ):
            try:
                while block := response.read(chunk):
                    sink.write(block)
                    received += len(block)
                    bar.update(len(block))
            except (OSError, http.client.HTTPException) as error:
                raise DownloadError(
                    f"{label}: download interrupted after {received} bytes ({error!r}); "
                    f"re-run to resume from {part.name}"
                ) from None
            sink.flush()
            os.fsync(sink.fileno())
        if length and length.isdigit() and total is not None and received < total:
            # http.client returns a short body without raising when the peer closes early.
            raise DownloadError(
                f"{label}: connection closed after {received} of {total} bytes; "
                f"re-run to resume from {part.name}"
            )


def _range_start(headers: http.client.HTTPMessage) -> int | None:
    """First byte of a ``Content-Range: bytes START-END/TOTAL`` header, or None."""
    value = headers.get("Content-Range", "")
    unit, _, spec = value.partition(" ")
    first, sep, _ = spec.partition("-")
    if unit.strip().lower() != "bytes" or not sep or not first.strip().isdigit():
        return None
    return int(first)


def _range_total(headers: http.client.HTTPMessage) -> int | None:
    """TOTAL of a ``Content-Range: bytes */TOTAL`` header (as sent with a 416), or None."""
    total = headers.get("Content-Range", "").rpartition("/")[2].strip()
    return int(total) if total.isdigit() else None


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as source:
        while block := source.read(_HASH_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def _verify_cached(path: Path, size: int | None, sha256: str | None, sidecar: Path) -> str:
    """Hash a cached file and check it against `size` and `sha256`; return its hash."""
    actual_size = path.stat().st_size
    fix = f"delete {path} and re-run `vidinv models pull` to download it again"
    if size is not None and actual_size != size:
        raise DownloadError(
            f"{path.name}: cached file has {actual_size} bytes, expected {size}; {fix}"
        )
    actual = _sha256_of(path)
    if sha256 is not None and actual != sha256:
        source = f"pinned in {sidecar.name}" if sidecar.is_file() else "pinned in the registry"
        raise DownloadError(
            f"{path.name}: cached file's sha256 is {actual}, expected {sha256} ({source}); {fix}"
        )
    return actual


def _read_sidecar(sidecar: Path) -> str | None:
    """The sha256 pinned in a sidecar, or None when there is no sidecar."""
    if not sidecar.is_file():
        return None
    try:
        record = json.loads(sidecar.read_text(encoding="utf-8"))
        value = str(record["sha256"]).lower()
    except (OSError, ValueError, KeyError, TypeError):
        raise DownloadError(
            f"{sidecar}: unreadable pinned hash; delete it to record a new one on the next pull"
        ) from None
    if len(value) != 64 or any(c not in "0123456789abcdef" for c in value):
        raise DownloadError(
            f"{sidecar}: {value!r} is not a sha256; delete it to record a new one on the next pull"
        )
    return value


def _write_sidecar(sidecar: Path, entry: RegistryEntry, sha256: str, size: int) -> None:
    """Record `sha256` for `entry` next to its file (written atomically)."""
    record = {
        "name": entry.name,
        "url": entry.url,
        "size": size,
        "sha256": sha256,
        "recorded_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_atomically(sidecar, json.dumps(record, indent=2) + "\n")
