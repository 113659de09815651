"""The page's HTTP server: the standard library's ``ThreadingHTTPServer`` on 127.0.0.1.

Why not Gradio: it brings dozens of packages (FastAPI, uvicorn, httpx, pandas, …) into an
install that already carries torch and MediaPipe, reaches for the network at start-up
(telemetry, version checks, a share link unless told not to) and changes its API from release
to release; the page needs five JSON calls and a file server, which the standard library
serves with nothing to install, offline, and with no surprises in a test.

API (JSON in and out; a user error answers 400 with ``{"error": "one line"}``):

    GET  /                      the page
    GET  /api/state             model folders to offer, the default model
    POST /api/clip/bundled      -> clip       (the shipped real talking-head clip)
    POST /api/clip/upload?name= -> clip       (the body is the file)
    POST /api/open              {clip, model} -> attributes, original and preview images
    POST /api/preview           {strengths}   -> preview image (edit + render + paste only)
    POST /api/render            {strengths}   -> job
    GET  /api/job/ID            -> progress; when done, the edited file's url
    GET  /files/TOKEN/NAME      a clip or a render (HTTP ranges, for seeking)
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import sys
import tempfile
import threading
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlparse

from vidinv.errors import VidinvError
from vidinv.ui.session import UiError, UiSession

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
#: Tried first when no port is given; a free port is taken if it is busy.
DEFAULT_PORT = 7860

_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
         ".mkv": "video/x-matroska", ".webm": "video/webm", ".avi": "video/x-msvideo"}


class UiServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, port: int, session: UiSession) -> None:
        super().__init__((HOST, port), _Handler)
        self.session = session

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.server_address[1]}/"


def _page() -> bytes:
    return resources.files("vidinv.ui").joinpath("page.html").read_bytes()


class _Handler(BaseHTTPRequestHandler):
    server: UiServer
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's signature
        log.debug("%s %s", self.address_string(), format % args)

    # -- answers --------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _json(self, payload: dict, status: int = HTTPStatus.OK) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _error(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        self._json({"error": message}, status)

    def _read_json(self) -> dict:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b"{}"
        try:
            value = json.loads(raw or b"{}")
        except json.JSONDecodeError:
            raise UiError("the request is not JSON") from None
        if not isinstance(value, dict):
            raise UiError("the request must be a JSON object")
        return value

    def _guarded(self, action) -> None:
        # Only pages served from this address may call it (no DNS-rebinding from a website).
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        if host not in (HOST, "localhost"):
            self._error("this server answers only on 127.0.0.1", HTTPStatus.FORBIDDEN)
            return
        try:
            action()
        except VidinvError as error:
            self._error(str(error))
        except (BrokenPipeError, ConnectionResetError):
            pass
        except Exception as error:  # noqa: BLE001 - one line on the page, the trace in the log
            log.exception("request %s %s failed", self.command, self.path)
            self._error(f"internal error: {type(error).__name__}: {error}",
                        HTTPStatus.INTERNAL_SERVER_ERROR)

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._guarded(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _get(self) -> None:
        session = self.server.session
        path = urlparse(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, _page(), "text/html; charset=utf-8")
        elif path == "/api/state":
            self._json({"models": session.model_choices(), "default_model":
                        session.default_model})
        elif match := re.fullmatch(r"/api/job/([0-9a-f]+)", path):
            self._json(session.job(match.group(1)))
        elif match := re.fullmatch(r"/files/([A-Za-z0-9_-]+)/[^/]+", path):
            self._file(session.file_for(match.group(1)))
        else:
            self._error("no such page", HTTPStatus.NOT_FOUND)

    def _post(self) -> None:
        session = self.server.session
        url = urlparse(self.path)
        if url.path == "/api/clip/bundled":
            self._read_json()
            self._json(session.add_bundled_clip().describe())
        elif url.path == "/api/clip/upload":
            name = unquote(parse_qs(url.query).get("name", ["upload.mp4"])[0])
            length = int(self.headers.get("Content-Length") or 0)
            self._json(session.add_upload(name, self.rfile, length).describe())
        elif url.path == "/api/open":
            request = self._read_json()
            self._json(session.open(str(request.get("clip", "")),
                                    request.get("model") or None))
        elif url.path == "/api/preview":
            self._json(session.preview(self._read_json().get("strengths", {})))
        elif url.path == "/api/render":
            self._json(session.start_render(self._read_json().get("strengths", {})))
        else:
            self._error("no such call", HTTPStatus.NOT_FOUND)

    def _file(self, path: Path) -> None:
        size = path.stat().st_size
        content_type = _MIME.get(path.suffix.lower(), "application/octet-stream")
        start, end, status = 0, size - 1, HTTPStatus.OK
        headers = {"Accept-Ranges": "bytes"}
        wanted = re.fullmatch(r"bytes=(\d*)-(\d*)", self.headers.get("Range", "").strip())
        if wanted and (wanted.group(1) or wanted.group(2)):
            if wanted.group(1):
                start = int(wanted.group(1))
                end = min(int(wanted.group(2)), size - 1) if wanted.group(2) else size - 1
            else:  # the last N bytes
                start = max(0, size - int(wanted.group(2)))
            if start >= size or start > end:
                self._send(HTTPStatus.REQUESTED_RANGE_NOT_SATISFIABLE, b"", content_type,
                           {"Content-Range": f"bytes */{size}"})
                return
            status = HTTPStatus.PARTIAL_CONTENT
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        length = end - start + 1
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(length))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command == "HEAD":
            return
        with path.open("rb") as handle:
            handle.seek(start)
            while length > 0:
                block = handle.read(min(length, 1 << 20))
                if not block:
                    break
                self.wfile.write(block)
                length -= len(block)


def make_server(port: int | None = None, model: str | None = None,
                workdir: Path | None = None, config=None) -> UiServer:
    """A server on 127.0.0.1 (``port``; None tries :data:`DEFAULT_PORT`, then a free one;
    0 takes a free one). Call ``serve_forever`` and, when done, ``shutdown`` and
    ``session.close()``."""
    workdir = Path(workdir) if workdir else Path(tempfile.mkdtemp(prefix="vidinv-ui-"))
    session = UiSession(workdir, default_model=model, config=config)
    try:
        return UiServer(DEFAULT_PORT if port is None else port, session)
    except OSError as error:
        if error.errno != errno.EADDRINUSE:
            raise
        if port is None:
            return UiServer(0, session)
        session.close()
        raise UiError(f"port {port} on {HOST} is in use; pass another --port, or leave it out "
                      "for a free one") from None


def _can_open_browser() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or sys.platform in ("darwin", "win32"))


def serve(port: int | None = None, model: str | None = None, open_browser: bool = True) -> int:
    """Serve the page until Ctrl-C (``vidinv ui``)."""
    if model is not None:
        from vidinv.models.folder import load_model_bundle

        load_model_bundle(model)  # a wrong --model is a one-line error before serving
    import torch

    # One intra-op thread: a preview and a render may run at once, one core each; on a busy
    # 2-core machine two spinning OpenMP threads per call made updates ~10× slower.
    torch.set_num_threads(1)
    server = make_server(port, model)
    print(f"vidinv ui: {server.url}  (Ctrl-C to stop)", flush=True)
    if open_browser and _can_open_browser():
        import webbrowser

        threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("vidinv ui: stopped", file=sys.stderr)
    finally:
        server.server_close()
        server.session.close()
    return 0
