"""The page's HTTP server: the standard library's ``ThreadingHTTPServer`` on 127.0.0.1.

Why not Gradio: it brings dozens of packages (FastAPI, uvicorn, httpx, pandas, …) into an
install that already carries torch and MediaPipe, reaches for the network at start-up
(telemetry, version checks, a share link unless told not to) and changes its API from release
to release; the page needs five JSON calls and a file server, which the standard library
serves with nothing to install, offline, and with no surprises in a test.

API (JSON in and out; a mistake answers 4xx with ``{"error": "one line"}``):

    GET  /                      the page
    GET  /api/state             model folders to offer, the default model
    POST /api/clip/bundled      -> clip       (the shipped real talking-head clip)
    POST /api/clip/upload?name= -> clip       (the body is the file, application/octet-stream)
    POST /api/open              {clip, model, region?, face?} -> attributes, original and
                                preview images, the frame previewed, its faces' boxes
    POST /api/preview           {strengths, frame?, region?, face?} -> preview image (edit +
                                render + paste only; a new frame or face choice is decoded and
                                encoded first), the faces' boxes
    POST /api/render            {strengths, region?, face?} -> job

``frame`` is a frame index (0 … frames − 1 of the open clip), ``region`` a ``face.region``
name or a list of them (face, mouth, eyes, brows, upper, lower), ``face`` the face choice
(``face.select``): "largest", "all" or a face's index from the left (the ``faces`` boxes of an
answer are in that order).
    GET  /api/job/ID            -> progress; when done, the edited file's url
    GET  /files/ID/NAME         a clip or a render (HTTP ranges, for seeking)

Who may call it (as Jupyter does it): the server binds 127.0.0.1 and answers only a ``Host``
of 127.0.0.1 or localhost (no DNS rebinding). Every call needs the run's random token, which
the printed URL carries (``/?token=…``): the first GET with it sets an ``HttpOnly``,
``SameSite=Strict`` cookie that the page's later calls send; a script may send the
``X-Vidinv-Token`` header or the ``token`` query parameter instead. An ``Origin`` (or, without
one, a ``Referer``) other than the page's own is refused, and so is a call a browser marks
``Sec-Fetch-Site: cross-site``. API bodies are JSON (``Content-Type: application/json``, at
most :data:`MAX_JSON_BYTES`, nested at most :data:`MAX_JSON_DEPTH` deep); an upload is the raw
file as ``application/octet-stream`` (or ``video/*``) of a declared length within the
session's limit, refused before any of it is read. Neither type can be sent cross-site without
a CORS preflight, which this server never grants. A refused request whose body was not read
closes its connection, so the body is never taken for the next request.
"""

from __future__ import annotations

import errno
import hmac
import json
import logging
import os
import re
import secrets
import shutil
import sys
import tempfile
import threading
from http import HTTPStatus
from http.cookies import CookieError, SimpleCookie
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import BinaryIO
from urllib.parse import parse_qs, urlparse

from vidinv.errors import VidinvError
from vidinv.ui.session import MAX_UPLOAD_BYTES, UiError, UiSession

log = logging.getLogger(__name__)

HOST = "127.0.0.1"
#: Tried first when no port is given; a free port is taken if it is busy.
DEFAULT_PORT = 7860
#: The largest JSON body a call may send (bytes).
MAX_JSON_BYTES = 64 << 10
#: How deep a JSON body may nest objects and arrays (the API's own bodies nest 2 deep).
MAX_JSON_DEPTH = 8
#: Connections the listening socket queues while every thread is busy (a page opens several).
LISTEN_BACKLOG = 128
#: Seconds a connection may stay silent before the server drops it (frees its thread).
IDLE_TIMEOUT = 60
#: The header a script may send the token in.
TOKEN_HEADER = "X-Vidinv-Token"

_MIME = {".mp4": "video/mp4", ".m4v": "video/mp4", ".mov": "video/quicktime",
         ".mkv": "video/x-matroska", ".webm": "video/webm", ".avi": "video/x-msvideo"}
_UPLOAD_TYPES = ("application/octet-stream",)
_CONTENT_LENGTH = re.compile(r"[0-9]{1,18}")
_RANGE = re.compile(r"bytes=([0-9]{0,18})-([0-9]{0,18})")


class HttpRefusal(Exception):
    """A request the server refuses before it reaches the session (status, one line)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class UiServer(ThreadingHTTPServer):
    """The page's server: ``url`` (with the token) is what the user opens."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, port: int, session: UiSession, token: str | None = None) -> None:
        super().__init__((HOST, port), _Handler)
        self.session = session
        self.token = token or secrets.token_urlsafe(32)
        self._busy = threading.Condition()
        self._requests = 0

    @property
    def origin(self) -> str:
        """``http://127.0.0.1:PORT``: the page's origin."""
        return f"http://{HOST}:{self.server_address[1]}"

    @property
    def base_url(self) -> str:
        """The server's root without the token (``http://127.0.0.1:PORT/``)."""
        return self.origin + "/"

    @property
    def url(self) -> str:
        """The page's address with the run's token: what ``vidinv ui`` prints."""
        return f"{self.origin}/?token={self.token}"

    @property
    def cookie_name(self) -> str:
        # one name per port: two servers on one host would otherwise overwrite each other's
        return f"vidinv_ui_{self.server_address[1]}"

    def allowed_origins(self) -> tuple[str, ...]:
        port = self.server_address[1]
        return (f"http://{HOST}:{port}", f"http://localhost:{port}")

    def token_matches(self, candidate: str | None) -> bool:
        return bool(candidate) and hmac.compare_digest(candidate.encode(), self.token.encode())

    # -- requests in flight ---------------------------------------------------------------

    def request_started(self) -> None:
        with self._busy:
            self._requests += 1

    def request_finished(self) -> None:
        with self._busy:
            self._requests -= 1
            self._busy.notify_all()

    def wait_until_idle(self, timeout: float) -> bool:
        """Wait until no request is being answered (True), at most ``timeout`` seconds."""
        with self._busy:
            return self._busy.wait_for(lambda: self._requests == 0, timeout)

    def close(self, timeout: float = 60.0) -> None:
        """Stop listening, let the requests in flight finish, stop the session (a running
        render stops at its next frame) and delete its files. Call after ``shutdown``."""
        self.server_close()
        self.wait_until_idle(timeout)
        self.session.close(timeout)


def _page() -> bytes:
    return resources.files("vidinv.ui").joinpath("page.html").read_bytes()


class _Body:
    """The request body: at most ``length`` bytes of ``stream``; counts what is left unread."""

    def __init__(self, stream: BinaryIO, length: int) -> None:
        self._stream = stream
        self.left = length

    def read(self, size: int = -1) -> bytes:
        size = self.left if size < 0 else min(size, self.left)
        data = self._stream.read(size) if size else b""
        self.left -= len(data)
        return data


def _json_depth_within(raw: bytes, limit: int) -> bool:
    """Whether ``raw``'s objects and arrays nest at most ``limit`` deep (strings skipped)."""
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:  # quote
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):  # [ {
            depth += 1
            if depth > limit:
                return False
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return True


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a JSON number")


class _Handler(BaseHTTPRequestHandler):
    server: UiServer
    protocol_version = "HTTP/1.1"
    timeout = IDLE_TIMEOUT

    def log_message(self, format: str, *args) -> None:  # noqa: A002 - the base's signature
        log.debug("%s %s", self.address_string(), format % args)

    # -- answers --------------------------------------------------------------------------

    def _send(self, status: int, body: bytes, content_type: str,
              headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self._end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _end_headers(self) -> None:
        body = getattr(self, "_body", None)
        if body is None or body.left:
            # a body not read to its end must never be parsed as the next request
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()

    def _json(self, payload: dict, status: int = HTTPStatus.OK,
              headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json", headers)

    def _error(self, message: str, status: int = HTTPStatus.BAD_REQUEST) -> None:
        log.info("refused %s %s: %d %s", self.command, urlparse(self.path).path[:200],
                 status, message)
        self._json({"error": message}, status)

    # -- who is asking --------------------------------------------------------------------

    def _check_host(self) -> None:
        # Only pages served from this address may call it (no DNS-rebinding from a website).
        hosts = self.headers.get_all("Host") or []
        host = hosts[0].strip().rsplit(":", 1)[0] if len(hosts) == 1 else ""
        if host not in (HOST, "localhost"):
            raise HttpRefusal(HTTPStatus.FORBIDDEN, "this server answers only on 127.0.0.1")

    def _cookie_token(self) -> str | None:
        raw = self.headers.get("Cookie")
        if not raw:
            return None
        try:
            morsel = SimpleCookie(raw).get(self.server.cookie_name)
        except CookieError:
            return None
        return morsel.value if morsel is not None else None

    def _check_token(self, query: dict[str, list[str]]) -> bool:
        """Refuse a call without the run's token; True when the URL carried it (the page
        then sets the cookie)."""
        server = self.server
        in_query = server.token_matches((query.get("token") or [None])[0])
        if not (in_query or server.token_matches(self.headers.get(TOKEN_HEADER))
                or server.token_matches(self._cookie_token())):
            raise HttpRefusal(HTTPStatus.FORBIDDEN, "this page needs the token: open the full "
                              "URL that vidinv ui printed (http://127.0.0.1:PORT/?token=…)")
        return in_query

    def _check_origin(self) -> None:
        """A browser's call must come from the page itself: Origin (else Referer) is the
        page's origin, and no ``Sec-Fetch-Site: cross-site``."""
        allowed = self.server.allowed_origins()
        if (self.headers.get("Sec-Fetch-Site") or "").lower() == "cross-site":
            raise HttpRefusal(HTTPStatus.FORBIDDEN, "calls from other sites are refused")
        origin = self.headers.get("Origin")
        if origin is not None:
            if origin not in allowed:
                raise HttpRefusal(HTTPStatus.FORBIDDEN,
                                  "calls from other sites are refused (Origin)")
            return
        referer = self.headers.get("Referer")
        if referer is not None and not any(referer == o or referer.startswith(o + "/")
                                           for o in allowed):
            raise HttpRefusal(HTTPStatus.FORBIDDEN,
                              "calls from other sites are refused (Referer)")

    def _declared_length(self) -> int:
        if self.headers.get("Transfer-Encoding") is not None:
            raise HttpRefusal(HTTPStatus.LENGTH_REQUIRED,
                              "send the body with a Content-Length, not chunked")
        values = self.headers.get_all("Content-Length") or []
        if not values:
            return 0
        if len(set(values)) != 1 or not _CONTENT_LENGTH.fullmatch(values[0].strip()):
            raise HttpRefusal(HTTPStatus.BAD_REQUEST,
                              "Content-Length must be one whole number of bytes")
        return int(values[0].strip())

    def _guarded(self, action) -> None:
        self.server.request_started()
        self._body = None  # nothing of the body read yet: a refusal closes the connection
        try:
            self._answer(action)
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            self.close_connection = True  # the client left (or stalled): nobody to tell
        finally:
            self.server.request_finished()

    def _answer(self, action) -> None:
        try:
            url = urlparse(self.path)
            self._check_host()
            try:
                query = parse_qs(url.query, max_num_fields=20)
            except ValueError:
                raise HttpRefusal(HTTPStatus.BAD_REQUEST, "too many query fields") from None
            self._set_cookie = self._check_token(query)
            self._check_origin()
            self._body = _Body(self.rfile, self._declared_length())
            action(url, query)
        except HttpRefusal as refusal:
            self._error(str(refusal), refusal.status)
        except UiError as error:
            self._error(str(error), error.status)
        except VidinvError as error:
            self._error(str(error))
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            raise
        except Exception as error:  # noqa: BLE001 - one line on the page, the trace in the log
            log.exception("request %s %s failed", self.command, self.path[:200])
            self._json({"error": f"internal error: {type(error).__name__}: {error}"},
                       HTTPStatus.INTERNAL_SERVER_ERROR)

    # -- bodies ---------------------------------------------------------------------------

    def _read_json(self) -> dict:
        if self.headers.get_content_type() != "application/json":
            raise HttpRefusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                              "send the request as JSON (Content-Type: application/json)")
        body = self._body
        if body.left > MAX_JSON_BYTES:
            raise HttpRefusal(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"the request is larger than {MAX_JSON_BYTES // 1024} KiB")
        length = body.left
        raw = body.read()
        if len(raw) < length:
            raise HttpRefusal(HTTPStatus.BAD_REQUEST, "the request was cut short")
        if not _json_depth_within(raw, MAX_JSON_DEPTH):
            raise HttpRefusal(HTTPStatus.BAD_REQUEST, "the request is nested too deeply")
        try:
            value = json.loads(raw or b"{}", parse_constant=_no_constant)
        except (ValueError, RecursionError):  # JSONDecodeError, a 5000-digit number, NaN
            raise UiError("the request is not JSON") from None
        if not isinstance(value, dict):
            raise UiError("the request must be a JSON object")
        return value

    # -- routes ---------------------------------------------------------------------------

    def do_GET(self) -> None:  # noqa: N802 - the base class's name
        self._guarded(self._get)

    def do_HEAD(self) -> None:  # noqa: N802
        self._guarded(self._get)

    def do_POST(self) -> None:  # noqa: N802
        self._guarded(self._post)

    def _get(self, url, query) -> None:
        session = self.server.session
        path = url.path
        if path in ("/", "/index.html"):
            headers = {"Content-Security-Policy": "default-src 'self'; img-src 'self' data:; "
                       "media-src 'self'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; "
                       "frame-ancestors 'none'", "Referrer-Policy": "no-referrer"}
            if self._set_cookie:
                headers["Set-Cookie"] = (f"{self.server.cookie_name}={self.server.token}; "
                                         "Path=/; HttpOnly; SameSite=Strict")
            self._send(HTTPStatus.OK, _page(), "text/html; charset=utf-8", headers)
        elif path == "/api/state":
            self._json({"models": session.model_choices(), "default_model":
                        session.default_model})
        elif match := re.fullmatch(r"/api/job/([0-9a-f]{1,64})", path):
            self._json(session.job(match.group(1)))
        elif match := re.fullmatch(r"/files/([A-Za-z0-9_-]{1,64})/[^/]+", path):
            self._file(session.file_for(match.group(1)))
        elif path == "/favicon.ico":
            self._send(HTTPStatus.NO_CONTENT, b"", "image/x-icon")
        else:
            self._error("no such page", HTTPStatus.NOT_FOUND)

    def _post(self, url, query) -> None:
        session = self.server.session
        if url.path == "/api/clip/bundled":
            self._read_json()
            self._json(session.add_bundled_clip().describe())
        elif url.path == "/api/clip/upload":
            if self.headers.get_content_type() not in _UPLOAD_TYPES \
                    and not self.headers.get_content_type().startswith("video/"):
                raise HttpRefusal(HTTPStatus.UNSUPPORTED_MEDIA_TYPE, "send the clip as the "
                                  "body, Content-Type: application/octet-stream")
            name = (query.get("name") or ["upload.mp4"])[0][:255]
            length = self._body.left
            session.check_upload_size(length)  # before any of it is read
            self._json(session.add_upload(name, self._body, length).describe())
        elif url.path == "/api/open":
            request = self._read_json()
            self._json(session.open(request.get("clip", ""), request.get("model") or None,
                                    request.get("region"), request.get("face")))
        elif url.path == "/api/preview":
            request = self._read_json()
            self._json(session.preview(request.get("strengths", {}), request.get("frame"),
                                       request.get("region"), request.get("face")))
        elif url.path == "/api/render":
            request = self._read_json()
            self._json(session.start_render(request.get("strengths", {}),
                                            request.get("region"), request.get("face")))
        else:
            self._error("no such call", HTTPStatus.NOT_FOUND)

    def _file(self, path: Path) -> None:
        size = path.stat().st_size
        content_type = _MIME.get(path.suffix.lower(), "application/octet-stream")
        start, end, status = 0, size - 1, HTTPStatus.OK
        headers = {"Accept-Ranges": "bytes"}
        # a Range this server does not understand (several ranges, absurd numbers) is ignored,
        # as RFC 9110 allows: the whole file is sent
        wanted = _RANGE.fullmatch((self.headers.get("Range") or "").strip()[:64])
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
        self.send_header("X-Content-Type-Options", "nosniff")
        for name, value in headers.items():
            self.send_header(name, value)
        self._end_headers()
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


def check_port(port: int | None) -> None:
    """Refuse a port no socket can have (one line, before anything is created)."""
    if port is not None and not 0 <= port <= 65535:
        raise UiError(f"--port must be between 0 and 65535 (got {port}); leave it out for "
                      f"{DEFAULT_PORT} or a free one")


def make_server(port: int | None = None, model: str | None = None,
                workdir: Path | None = None, config=None,
                max_upload_bytes: int = MAX_UPLOAD_BYTES) -> UiServer:
    """A server on 127.0.0.1 (``port``; None tries :data:`DEFAULT_PORT`, then a free one;
    0 takes a free one). Call ``serve_forever`` and, when done, ``shutdown`` and ``close``.

    ``workdir`` (default: a new temporary folder) holds uploads and renders; a server that
    cannot start leaves none behind.
    """
    check_port(port)
    own_workdir = workdir is None
    workdir = Path(tempfile.mkdtemp(prefix="vidinv-ui-")) if own_workdir else Path(workdir)
    try:
        session = UiSession(workdir, default_model=model, config=config,
                            max_upload_bytes=max_upload_bytes)
        try:
            return UiServer(DEFAULT_PORT if port is None else port, session)
        except OSError as error:
            if error.errno == errno.EADDRINUSE and port is None:
                return UiServer(0, session)
            if error.errno == errno.EADDRINUSE:
                raise UiError(f"port {port} on {HOST} is in use; pass another --port, or leave "
                              "it out for a free one") from None
            if error.errno == errno.EACCES:
                raise UiError(f"port {port} on {HOST} needs privileges this user lacks; pass "
                              "a port above 1023, or leave it out for a free one") from None
            raise
    except BaseException:
        if own_workdir:  # a given workdir is the caller's to remove
            shutil.rmtree(workdir, ignore_errors=True)
        raise


def _can_open_browser() -> bool:
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")
                or sys.platform in ("darwin", "win32"))


def serve(port: int | None = None, model: str | None = None, open_browser: bool = True,
          max_upload_bytes: int = MAX_UPLOAD_BYTES, config=None) -> int:
    """Serve the page until Ctrl-C (``vidinv ui``; returns 0) or SIGTERM (re-raised once the
    server has stopped). Either way a running render stops at its next frame and every file
    of the run is deleted before this returns. ``config`` (a PipelineConfig; default the
    defaults) is the page's starting point, e.g. the face choice of ``--face``/``--face-ref``."""
    import signal

    check_port(port)
    if model is not None:
        from vidinv.models.folder import load_model_bundle

        load_model_bundle(model)  # a wrong --model is a one-line error before serving
    import torch

    # One intra-op thread: a preview and a render may run at once, one core each; on a busy
    # 2-core machine two spinning OpenMP threads per call made updates ~10× slower.
    torch.set_num_threads(1)
    server = make_server(port, model, config=config, max_upload_bytes=max_upload_bytes)
    try:
        print(f"vidinv ui: {server.url}  (Ctrl-C to stop)", flush=True)
        if open_browser and _can_open_browser():
            import webbrowser

            threading.Thread(target=webbrowser.open, args=(server.url,), daemon=True).start()
        try:
            server.serve_forever()
        except KeyboardInterrupt as stop:
            print("vidinv ui: stopping", file=sys.stderr, flush=True)
            if type(stop) is not KeyboardInterrupt:  # SIGTERM, SIGHUP: the caller reports it
                raise
    finally:
        # a second Ctrl-C must not cut the stop short: a render's native threads still
        # running when the interpreter ends abort the process
        ignored = _ignore_stop_signals(signal)
        try:
            server.close()
        finally:
            for signum, handler in ignored.items():
                signal.signal(signum, handler)
    print("vidinv ui: stopped", file=sys.stderr)
    return 0


def _ignore_stop_signals(signal) -> dict:
    if threading.current_thread() is not threading.main_thread():
        return {}
    previous = {}
    for name in ("SIGINT", "SIGTERM", "SIGHUP"):
        signum = getattr(signal, name, None)
        if signum is not None:
            previous[signum] = signal.signal(signum, signal.SIG_IGN)
    return previous
