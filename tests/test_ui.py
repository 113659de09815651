"""`vidinv ui`: the session behind the page, its HTTP API, and the page in a real browser.

The browser test drives the system's chromium (Debian's `chromium` and `chromium-driver`
packages) through Selenium; no browser is downloaded at run time. It skips, saying why, where
either is missing. Set VIDINV_UI_SCREENSHOT=path.png to keep the page's screenshot.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import make_video
from tests.model_fixtures import make_tiny_model
from vidinv.ui.server import make_server
from vidinv.ui.session import UiError, UiSession

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


@pytest.fixture(scope="module")
def model(tmp_path_factory) -> Path:
    return make_tiny_model(tmp_path_factory.mktemp("model") / "tiny")


@pytest.fixture
def session(tmp_path, model):
    session = UiSession(tmp_path / "ui", default_model=str(model))
    yield session
    session.close()


def _decode(data_url: str) -> np.ndarray:
    import base64

    import cv2

    raw = base64.b64decode(data_url.split(",", 1)[1])
    return cv2.imdecode(np.frombuffer(raw, np.uint8), cv2.IMREAD_COLOR)


def test_preview_follows_the_strengths_without_encoding_again(session, monkeypatch):
    clip = session.add_bundled_clip()
    bundle = session.bundle(None)
    calls = {"encoder": 0}
    forward = bundle.encoder.forward

    def counting_forward(*args, **kwargs):
        calls["encoder"] += 1
        return forward(*args, **kwargs)

    monkeypatch.setattr(bundle.encoder, "forward", counting_forward)
    opened = session.open(clip.id, None)
    assert opened["attributes"] == ["smile"]
    assert (opened["width"], opened["height"], opened["frames"]) == (176, 144, 120)
    encodes_to_open = calls["encoder"]
    assert encodes_to_open >= 1

    zero = _decode(session.preview({"smile": 0.0})["image"])
    moved = _decode(session.preview({"smile": 3.0})["image"])
    again = _decode(session.preview({"smile": 0.0})["image"])
    assert calls["encoder"] == encodes_to_open  # a slider move does not run the encoder
    assert zero.shape == moved.shape == (144, 176, 3)
    assert np.abs(moved.astype(int) - zero.astype(int)).max() > 10
    assert np.array_equal(zero, again)  # the cached frame is never altered by a preview
    with pytest.raises(UiError, match="frown"):
        session.preview({"frown": 1.0})


def test_render_job_writes_the_edited_clip(session, tmp_path):
    local = tmp_path / "short.mp4"
    from tests.media import real_clip_path
    from vidinv.video.reader import VideoReader
    from vidinv.video.writer import VideoWriter

    reader = VideoReader(real_clip_path())
    with VideoWriter(local, reader.info, crf=12, preset="ultrafast") as writer:
        for frame in reader:
            if frame.index >= 12:
                break
            writer.write(frame)
    clip = session.add_upload("my clip.mp4", io.BytesIO(local.read_bytes()),
                              local.stat().st_size)
    assert clip.name == "my_clip.mp4" and clip.frames == 12
    session.open(clip.id, None)
    job = session.start_render({"smile": 2.0})
    deadline = time.monotonic() + 120
    while not (state := session.job(job["job"]))["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert state["error"] is None and state["done"] == state["total"] == 12
    path = session.file_for(state["url"].split("/")[2])
    with av.open(str(path)) as container:
        assert sum(1 for _ in container.decode(video=0)) == 12


def test_bad_file_and_no_face_are_messages(session, tmp_path):
    junk = os.urandom(4000)
    with pytest.raises(UiError) as info:
        session.add_upload("holiday.mp4", io.BytesIO(junk), len(junk))
    assert "holiday.mp4" in str(info.value) and str(session.workdir) not in str(info.value)
    assert not list((session.workdir / "uploads").iterdir())  # nothing left behind
    faceless = make_video(tmp_path / "pattern.mp4", n_frames=8, size=(96, 80)).path
    data = Path(faceless).read_bytes()
    clip = session.add_upload("pattern.mp4", io.BytesIO(data), len(data))
    from vidinv.errors import VidinvError

    with pytest.raises(VidinvError, match="no face found in pattern.mp4"):
        session.open(clip.id, None)


# --- HTTP ------------------------------------------------------------------------------------


@pytest.fixture
def server(tmp_path, model):
    server = make_server(0, model=str(model), workdir=tmp_path / "served")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    server.session.close()


def _post(server, path: str, payload: dict | bytes,
          content_type: str = "application/json") -> tuple[int, dict]:
    """POST as the page does: the token header and a JSON body."""
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(server.base_url + path.lstrip("/"), data=body, method="POST",
                                     headers={"X-Vidinv-Token": server.token,
                                              "Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, json.load(answer)
    except urllib.error.HTTPError as error:
        return error.code, json.load(error)


def _get(server, path: str, headers: dict | None = None) -> tuple[int, bytes]:
    request = urllib.request.Request(server.base_url + path.lstrip("/"),
                                     headers={"X-Vidinv-Token": server.token, **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as answer:
            return answer.status, answer.read()
    except urllib.error.HTTPError as error:
        return error.code, error.read()


def test_http_api_answers_errors_as_one_line_json(server):
    with urllib.request.urlopen(server.url, timeout=10) as answer:
        page = answer.read().decode()
    assert answer.headers["Content-Type"].startswith("text/html") and 'id="preview"' in page
    status, _ = _get(server, "api/state", {"Host": "evil.test"})
    assert status == 403
    status, error = _post(server, "api/open", b"not json")
    assert status == 400 and error == {"error": "the request is not JSON"}
    status, error = _post(server, "api/preview", {"strengths": {}})
    assert status == 400 and "open a clip first" in error["error"]
    status, clip = _post(server, "api/clip/bundled", {})
    status, opened = _post(server, "api/open", {"clip": clip["clip"]})
    assert status == 200 and opened["attributes"] == ["smile"]
    request = urllib.request.Request(server.origin + opened["original_url"],
                                     headers={"Range": "bytes=100-199",
                                              "X-Vidinv-Token": server.token})
    with urllib.request.urlopen(request, timeout=10) as answer:
        assert answer.status == 206 and len(answer.read()) == 100
        assert answer.headers["Content-Range"].endswith(f"/{clip_size(server, opened)}")


def clip_size(server, opened) -> int:
    token = opened["original_url"].split("/")[2]
    return server.session.file_for(token).stat().st_size


# --- the page in a real browser --------------------------------------------------------------


def _browser():
    if not (Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file()):
        pytest.skip(f"no system browser: {CHROMIUM} and {CHROMEDRIVER} are needed "
                    "(apt-get install chromium chromium-driver)")
    webdriver = pytest.importorskip("selenium.webdriver",
                                    reason="selenium is not installed (pip install selenium)")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless", "--no-sandbox", "--disable-gpu",
                     "--disable-background-networking", "--disable-component-update",
                     "--disable-sync", "--no-first-run", "--disable-dev-shm-usage",
                     "--window-size=1280,900", "--autoplay-policy=no-user-gesture-required"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def _wait(driver, condition, seconds: float, what: str):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        value = condition(driver)
        if value:
            return value
        time.sleep(0.1)
    message = driver.find_element("id", "message").text
    raise AssertionError(f"timed out waiting for {what}; the page says: {message!r}")


def test_the_page_in_a_headless_browser(tmp_path):
    """Default model, bundled clip: load, move a slider, render, play and download."""
    import torch

    driver = _browser()  # skips without chromium, chromedriver or selenium
    from selenium.webdriver.common.keys import Keys

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as `vidinv ui` serves (vidinv.ui.server.serve)
    server = make_server(0, workdir=tmp_path / "served")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    state = lambda d: d.find_element("tag name", "body").get_attribute("data-state")  # noqa: E731
    try:
        driver.get(server.url)
        _wait(driver, lambda d: state(d) == "ready", 120, "the bundled clip to open")
        sliders = driver.find_elements("css selector", "#sliders input[type=range]")
        assert {s.get_attribute("data-attr") for s in sliders} >= {"smile", "yaw", "mouth_open"}
        preview = driver.find_element("id", "preview")
        before, version = preview.get_attribute("src"), int(preview.get_attribute("data-version"))
        assert before.startswith("data:image/jpeg")

        smile = driver.find_element("id", "slider-smile")
        smile.click()  # the thumb sits in the middle (0); arrow keys move it by one step
        for _ in range(25):
            smile.send_keys(Keys.ARROW_RIGHT)
        _wait(driver, lambda d: float(d.find_element("id", "slider-smile")
                                      .get_attribute("value")) >= 2.0, 10, "the slider to move")
        _wait(driver, lambda d: d.execute_script(
            "return !previewBusy && !previewAgain") and int(preview.get_attribute(
                "data-version")) > version, 30, "the preview to follow the slider")
        assert preview.get_attribute("src") != before
        assert driver.find_element("id", "preview-ms").text.endswith("ms)")

        driver.find_element("id", "render").click()
        _wait(driver, lambda d: state(d) in ("rendered", "error"), 300, "the render")
        assert state(driver) == "rendered", driver.find_element("id", "message").text
        playable = driver.execute_script(
            "return document.createElement('video').canPlayType('video/mp4; "
            "codecs=\"avc1.64001E\"')")
        if playable:  # Debian's chromium plays H.264; a build without it still downloads
            _wait(driver, lambda d: d.execute_script(
                "return ['video-original', 'video-edited'].every(id => {"
                "const v = document.getElementById(id); return v.readyState >= 4; })"),
                  30, "both videos to load")
            assert driver.execute_script(
                "return document.getElementById('video-edited').videoWidth") == 176
        href = driver.find_element("id", "download").get_attribute("href")
        assert driver.find_element("id", "download").get_attribute("download").endswith(".mp4")
        downloaded = tmp_path / "downloaded.mp4"
        with pytest.raises(urllib.error.HTTPError, match="403"):  # the link needs the token
            urllib.request.urlopen(href, timeout=30)
        # the browser holds it as an HttpOnly, SameSite=Strict cookie, out of the page's reach
        cookie = driver.get_cookie(server.cookie_name)
        assert cookie["value"] == server.token and cookie["httpOnly"]
        assert cookie["sameSite"] == "Strict"
        assert driver.execute_script("return document.cookie") == ""
        request = urllib.request.Request(href, headers={
            "Cookie": f"{server.cookie_name}={cookie['value']}"})
        with urllib.request.urlopen(request, timeout=30) as answer:
            downloaded.write_bytes(answer.read())
        with av.open(str(downloaded)) as container:
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]
        assert len(frames) == 120 and frames[0].shape == (144, 176, 3)

        screenshot = Path(os.environ.get("VIDINV_UI_SCREENSHOT") or tmp_path / "ui.png")
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        content = driver.execute_cdp_cmd("Page.getLayoutMetrics", {})["cssContentSize"]
        driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {  # the whole page
            "width": 1280, "height": int(content["height"]) + 1, "deviceScaleFactor": 1,
            "mobile": False})
        assert driver.save_screenshot(str(screenshot))
        assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

        # A bad file is a message on the page, not a traceback.
        junk = tmp_path / "broken.mp4"
        junk.write_bytes(os.urandom(3000))
        driver.find_element("id", "clip-file").send_keys(str(junk))
        _wait(driver, lambda d: state(d) == "error", 30, "the upload's error")
        message = driver.find_element("id", "message")
        assert "broken.mp4" in message.text and "Traceback" not in message.text
        assert "error" in message.get_attribute("class")
    finally:
        torch.set_num_threads(threads)
        driver.quit()
        server.shutdown()
        server.server_close()
        server.session.close()
        shutil.rmtree(tmp_path / "served", ignore_errors=True)


# --- the command -----------------------------------------------------------------------------


def test_cli_ui_serves_the_page_and_says_when_the_port_is_busy(model):
    import socket
    import subprocess
    import sys

    command = [sys.executable, "-m", "vidinv.cli", "ui", "--no-browser", "--model", str(model)]
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([*command, "--port", str(port)], capture_output=True, text=True,
                                timeout=120)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip() == (f"vidinv: error: port {port} on 127.0.0.1 is in use; pass "
                                     "another --port, or leave it out for a free one")

    server = subprocess.Popen([*command, "--port", "0"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True)
    try:
        line = server.stdout.readline()
        assert line.startswith("vidinv ui: http://127.0.0.1:"), line
        url = line.split()[2]
        base, token = url.split("/?token=")
        assert len(token) >= 40  # secrets.token_urlsafe(32)
        with pytest.raises(urllib.error.HTTPError, match="403"):
            urllib.request.urlopen(base + "/api/state", timeout=30)
        with urllib.request.urlopen(f"{base}/api/state?token={token}", timeout=30) as answer:
            state = json.load(answer)
        assert state["default_model"] == str(model)
        assert state["models"][0]["path"] == str(model)
    finally:
        server.terminate()
        server.wait(timeout=30)
