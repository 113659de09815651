"""`vidinv models pull`: downloads against a local HTTP server, never the internet."""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vidinv.errors import DownloadError, InputFileError
from vidinv.models import registry
from vidinv.models.registry import RegistryEntry, default_cache_dir, download, installed, pull


@dataclass
class ServerState:
    """What the test server serves and what it saw; reset for every test."""

    root: Path
    honour_range: bool = True
    truncate_after: int | None = None  # send a full Content-Length, then drop the connection
    ranges: list[str | None] = field(default_factory=list)
    body_bytes: int = 0


class _RangeHandler(BaseHTTPRequestHandler):
    """GET for files under the state's root, with single `bytes=START-` ranges."""

    server: _Server

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        state = self.server.state
        path = state.root / self.path.lstrip("/")
        range_header = self.headers.get("Range")
        state.ranges.append(range_header)
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        if range_header and state.honour_range:
            start = int(range_header.removeprefix("bytes=").partition("-")[0])
            if start >= len(data):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(data)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            body = data[start:]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            body = data
            self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if state.truncate_after is not None:
            body = body[: state.truncate_after]
            self.close_connection = True
        self.wfile.write(body)
        state.body_bytes += len(body)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002
        del format, args


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    state: ServerState


@pytest.fixture(scope="module")
def http_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[_Server]:
    server = _Server(("127.0.0.1", 0), _RangeHandler)
    server.state = ServerState(root=tmp_path_factory.mktemp("served"))
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.01})
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


@pytest.fixture
def served(http_server: _Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ServerState:
    """A fresh serving state for one test; loopback is never sent through a proxy."""
    monkeypatch.setenv("no_proxy", "*")
    http_server.state = ServerState(root=tmp_path / "served")
    http_server.state.root.mkdir()
    return http_server.state


@pytest.fixture
def base_url(http_server: _Server) -> str:
    host, port = http_server.server_address[:2]
    return f"http://{host}:{port}"


def _payload(n: int, seed: int = 0) -> bytes:
    return bytes((i * 31 + seed * 7 + (i >> 8)) % 251 for i in range(n))


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _entry(base_url: str, name: str, data: bytes | None, *, pin: bool = True) -> RegistryEntry:
    return RegistryEntry(
        name=name,
        url=f"{base_url}/{name}.bin",
        filename=f"{name}.bin",
        kind="interfacegan-direction",
        size=len(data) if pin and data is not None else None,
        sha256=_sha(data) if pin and data is not None else None,
        description=f"test file {name}",
        licence="test",
    )


def _serve(state: ServerState, name: str, data: bytes) -> None:
    (state.root / f"{name}.bin").write_bytes(data)


def test_good_download_verifies_and_lands_atomically(
    served: ServerState, base_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = _payload(300_000)
    _serve(served, "good", data)
    entry = _entry(base_url, "good", data)
    cache = tmp_path / "cache"
    dest = cache / "good.bin"

    replaced: list[tuple[Path, Path]] = []
    real_replace = registry.os.replace

    def spy_replace(src: Path, dst: Path) -> None:
        # At the moment of the rename the final name is still free and the .part is complete.
        assert not Path(dst).exists()
        assert Path(src).read_bytes() == data
        replaced.append((Path(src), Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(registry.os, "replace", spy_replace)
    path = pull("good", cache, progress=False, registry=[entry], notify=None)

    assert path == dest
    assert dest.read_bytes() == data
    assert replaced == [(cache / "good.bin.part", dest)]
    assert not (cache / "good.bin.part").exists()
    assert not (cache / "good.bin.sha256.json").exists()  # pinned in the registry already
    assert installed(cache, registry=[entry]) == [(entry, dest)]

    # Present and verified: a second pull does not touch the network.
    requests_before = len(served.ranges)
    assert pull("good", cache, progress=False, registry=[entry], notify=None) == dest
    assert len(served.ranges) == requests_before


def test_corrupted_download_is_rejected_and_leaves_nothing(
    served: ServerState, base_url: str, tmp_path: Path
) -> None:
    good = _payload(50_000)
    corrupted = bytearray(good)
    corrupted[12_345] ^= 0xFF
    _serve(served, "corrupt", bytes(corrupted))
    entry = _entry(base_url, "corrupt", good)
    cache = tmp_path / "cache"

    with pytest.raises(DownloadError) as caught:
        pull("corrupt", cache, progress=False, registry=[entry], notify=None)

    message = str(caught.value)
    assert _sha(good) in message and _sha(bytes(corrupted)) in message
    assert "\n" not in message
    assert not (cache / "corrupt.bin").exists()
    assert not (cache / "corrupt.bin.part").exists()
    assert installed(cache, registry=[entry]) == []


def test_partial_download_resumes_with_range(
    served: ServerState, base_url: str, tmp_path: Path
) -> None:
    data = _payload(120_000, seed=1)
    _serve(served, "resume", data)
    entry = _entry(base_url, "resume", data)
    cache = tmp_path / "cache"
    cache.mkdir()
    done = 40_000
    (cache / "resume.bin.part").write_bytes(data[:done])

    path = pull("resume", cache, progress=False, registry=[entry], notify=None)

    assert path.read_bytes() == data
    assert served.ranges == [f"bytes={done}-"]
    assert served.body_bytes == len(data) - done  # only the missing tail crossed the wire
    assert not (cache / "resume.bin.part").exists()


def test_server_ignoring_range_restarts_from_zero(
    served: ServerState, base_url: str, tmp_path: Path
) -> None:
    data = _payload(80_000, seed=2)
    _serve(served, "norange", data)
    served.honour_range = False
    entry = _entry(base_url, "norange", data)
    cache = tmp_path / "cache"
    cache.mkdir()
    # A stale .part whose bytes are not a prefix of the file: appending to it would be wrong.
    (cache / "norange.bin.part").write_bytes(b"\x00" * 10_000)

    path = pull("norange", cache, progress=False, registry=[entry], notify=None)

    assert served.ranges == ["bytes=10000-"]
    assert path.read_bytes() == data


def test_complete_part_is_finished_without_refetching_body(
    served: ServerState, base_url: str, tmp_path: Path
) -> None:
    data = _payload(10_000, seed=3)
    _serve(served, "whole", data)
    entry = _entry(base_url, "whole", data, pin=False)  # size unknown: the server is asked
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "whole.bin.part").write_bytes(data)

    path = pull("whole", cache, progress=False, registry=[entry], notify=None)

    assert served.ranges == ["bytes=10000-"]  # answered 416 with the total size
    assert served.body_bytes == 0
    assert path.read_bytes() == data


def test_interrupted_download_keeps_part_and_rerun_resumes(
    served: ServerState, base_url: str, tmp_path: Path
) -> None:
    data = _payload(60_000, seed=4)
    _serve(served, "drop", data)
    entry = _entry(base_url, "drop", data)
    cache = tmp_path / "cache"
    served.truncate_after = 25_000

    with pytest.raises(DownloadError, match="re-run to resume"):
        pull("drop", cache, progress=False, registry=[entry], notify=None)
    assert (cache / "drop.bin.part").read_bytes() == data[:25_000]
    assert not (cache / "drop.bin").exists()

    served.truncate_after = None
    path = pull("drop", cache, progress=False, registry=[entry], notify=None)
    assert served.ranges == [None, "bytes=25000-"]
    assert path.read_bytes() == data


def test_http_error_is_a_one_line_download_error(base_url: str, served: ServerState) -> None:
    dest = served.root.parent / "out" / "missing.bin"
    with pytest.raises(DownloadError, match="HTTP 404") as caught:
        download(
            f"{base_url}/missing.bin",
            dest,
            expected_size=None,
            expected_sha256=None,
            progress=False,
        )
    assert "\n" not in str(caught.value)
    assert not dest.exists()


def test_unknown_name_lists_known_names(base_url: str, tmp_path: Path) -> None:
    entries = [_entry(base_url, "alpha", b"a"), _entry(base_url, "beta", b"b")]
    with pytest.raises(InputFileError) as caught:
        pull("gamma", tmp_path, progress=False, registry=entries, notify=None)
    message = str(caught.value)
    assert "'gamma'" in message and "alpha" in message and "beta" in message


def test_unknown_name_uses_builtin_registry(tmp_path: Path) -> None:
    with pytest.raises(InputFileError) as caught:
        pull("no-such-model", tmp_path, progress=False, notify=None)
    for entry in registry.list_entries():
        assert entry.name in str(caught.value)


def test_first_download_pins_hash_and_later_tampering_is_rejected(
    served: ServerState, base_url: str, tmp_path: Path
) -> None:
    data = _payload(30_000, seed=5)
    _serve(served, "tofu", data)
    entry = _entry(base_url, "tofu", None)
    assert entry.sha256 is None and entry.size is None
    cache = tmp_path / "cache"
    messages: list[str] = []

    path = pull("tofu", cache, progress=False, registry=[entry], notify=messages.append)

    sidecar = cache / "tofu.bin.sha256.json"
    record = json.loads(sidecar.read_text())
    assert record["sha256"] == _sha(data) and record["size"] == len(data)
    assert len(messages) == 1 and "recorded" in messages[0] and _sha(data) in messages[0]

    # The cached file is changed on disk: the pinned hash rejects it.
    path.write_bytes(data[:-1] + b"X")
    with pytest.raises(DownloadError, match="sha256"):
        pull("tofu", cache, progress=False, registry=[entry], notify=messages.append)

    # Upstream now serves other bytes: a fresh download is rejected and nothing lands.
    path.unlink()
    _serve(served, "tofu", _payload(30_000, seed=6))
    with pytest.raises(DownloadError) as caught:
        pull("tofu", cache, progress=False, registry=[entry], notify=messages.append)
    assert _sha(data) in str(caught.value)
    assert not path.exists() and not (cache / "tofu.bin.part").exists()
    assert json.loads(sidecar.read_text())["sha256"] == _sha(data)  # the pin is kept

    # The original bytes still verify, and no new hash is recorded.
    _serve(served, "tofu", data)
    assert pull("tofu", cache, progress=False, registry=[entry], notify=messages.append) == path
    assert path.read_bytes() == data
    assert len(messages) == 1


def test_default_cache_dir_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VIDINV_CACHE", str(tmp_path / "explicit"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert default_cache_dir() == tmp_path / "explicit"
    monkeypatch.delenv("VIDINV_CACHE")
    assert default_cache_dir() == tmp_path / "xdg" / "vidinv"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "vidinv"


def test_builtin_registry_is_well_formed() -> None:
    entries = registry.list_entries()
    assert len({e.name for e in entries}) == len(entries)
    assert len({e.filename for e in entries}) == len(entries)
    for entry in entries:
        assert entry.url.startswith("https://")
        assert "drive.google.com" not in entry.url
        if entry.sha256 is not None:
            assert len(entry.sha256) == 64 and entry.sha256 == entry.sha256.lower()
            int(entry.sha256, 16)
