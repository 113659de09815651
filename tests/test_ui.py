"""`vidinv ui`: the session behind the page, its HTTP API, and the page in a real browser.

The browser test drives the system's chromium (Debian's `chromium` and `chromium-driver`
packages) through Selenium; no browser is downloaded at run time. It skips, saying why, where
either is missing, and fails under CI (tests/skips.py). Set VIDINV_UI_SCREENSHOT=path.png to keep
the page's screenshot.
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
from tests.skips import needed, require
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
    import dataclasses

    from vidinv.pipeline import wiring

    clip = session.add_bundled_clip()
    calls = {"encoder": 0}
    make_networks = wiring.make_networks

    def counting_networks(*args, **kwargs):
        # counted at the encode engine's call: the module's own forward runs only when a
        # graph is traced, and not at all when the trace cache already holds it
        networks = make_networks(*args, **kwargs)
        encode = networks.encode

        def counting_encode(*inputs, **options):
            calls["encoder"] += 1
            return encode(*inputs, **options)

        return dataclasses.replace(networks, encode=counting_encode)

    monkeypatch.setattr(wiring, "make_networks", counting_networks)
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
    # another frame: decoded and encoded once, with the engines already built (not traced again)
    moved = session.preview({"smile": 3.0}, frame=60)
    assert moved["preview_index"] == 60 and calls["encoder"] == encodes_to_open + 1
    session.preview({"smile": 0.0}, frame=60, region="mouth")
    assert calls["encoder"] == encodes_to_open + 1


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


def test_the_preview_moves_to_a_frame_and_keeps_to_the_regions(server):
    status, clip = _post(server, "api/clip/bundled", {})
    status, opened = _post(server, "api/open", {"clip": clip["clip"], "region": ["face"]})
    assert status == 200 and opened["preview_index"] == 0 and opened["region"] == "face"
    assert opened["frames"] == 120
    first = _decode(opened["original_image"])
    status, zero = _post(server, "api/preview", {"strengths": {"smile": 2.0}})
    assert status == 200 and zero["preview_index"] == 0 and "original_image" not in zero

    status, moved = _post(server, "api/preview", {"strengths": {"smile": 2.0}, "frame": 100})
    assert status == 200, moved
    assert moved["preview_index"] == 100 and moved["face_found"] is True
    assert moved["decoded_frames"] == 101  # the real clip's only keyframe is frame 0
    later = _decode(moved["original_image"])  # the real clip's frame 100, not frame 0
    assert np.abs(later.astype(int) - first.astype(int)).mean() > 3
    edited_later = _decode(moved["image"])
    assert np.abs(edited_later.astype(int) - _decode(zero["image"]).astype(int)).mean() > 3
    assert np.abs(edited_later.astype(int) - later.astype(int)).max() > 10  # still edited

    # the same frame again is not decoded again: no original image comes back
    status, again = _post(server, "api/preview", {"strengths": {"smile": 2.0}, "frame": 100})
    assert status == 200 and "original_image" not in again
    assert np.abs(_decode(again["image"]).astype(int) - edited_later.astype(int)).max() <= 2

    # a region is the render's: the eyes-only edit is not the whole-face edit
    status, eyes = _post(server, "api/preview", {"strengths": {"smile": 3.0}, "frame": 100,
                                                 "region": ["eyes"]})
    status, face = _post(server, "api/preview", {"strengths": {"smile": 3.0}, "frame": 100,
                                                 "region": "face"})
    assert eyes["region"] == "eyes" and face["region"] == "face"
    eyes_image, face_image = _decode(eyes["image"]), _decode(face["image"])
    # the eyes-only edit changes fewer pixels of the source than the whole-face edit
    changed = lambda image: int((np.abs(image.astype(int) - later.astype(int)).max(2)  # noqa: E731
                                 > 12).sum())
    assert 0 < changed(eyes_image) < changed(face_image)

    for bad, says in ((-1, "frames are 0 to 119"), (120, "frames are 0 to 119"),
                      (1.5, "whole number"), (True, "whole number"), ("3", "whole number"),
                      (10**30, "frames are 0 to 119")):
        status, error = _post(server, "api/preview", {"strengths": {}, "frame": bad})
        assert status == 400 and says in error["error"] and "\n" not in error["error"], bad
    for bad, says in (("nose", "unknown region 'nose'"), ([], "1 to 6"),
                      (["mouth", 3], "region must be"), (["eyes"] * 7, "1 to 6"),
                      ({"eyes": 1}, "region must be"), (["x" * 40], "region must be")):
        for call, body in (("api/preview", {"strengths": {}, "region": bad}),
                           ("api/render", {"strengths": {}, "region": bad}),
                           ("api/open", {"clip": clip["clip"], "region": bad})):
            status, error = _post(server, call, body)
            assert status == 400 and says in error["error"], (call, bad, error)
            assert "\n" not in error["error"]
    assert server.session.jobs == {}  # no bad request started a render


def _people_upload(session, tmp_path):
    from tests.media import make_people_clip

    people = make_people_clip(tmp_path / "two people.mp4", "crossing", n_frames=6)
    data = people.path.read_bytes()
    return people, session.add_upload("two people.mp4", io.BytesIO(data), len(data))


def test_the_face_choice_edits_the_face_clicked(session, tmp_path, monkeypatch):
    people, clip = _people_upload(session, tmp_path)
    opened = session.open(clip.id, None)
    k, faces = opened["preview_index"], opened["faces"]
    assert opened["select"] == "largest" and len(faces) == 2
    for face, name in zip(faces, ("astronaut", "carphone"), strict=True):  # left to right
        x0, y0, x1, y1 = people.faces[name][k] / np.array([480, 270, 480, 270])
        box = face["box"]
        assert abs((box[0] + box[2]) / 2 - (x0 + x1) / 2) < 0.04, (name, box)
        assert abs((box[1] + box[3]) / 2 - (y0 + y1) / 2) < 0.06, (name, box)
    assert sum(face["edited"] for face in faces) == 1  # the largest only
    original = _decode(opened["original_image"]).astype(int)

    def changed(answer, name) -> int:
        x0, y0, x1, y1 = np.clip(people.boxes[name][k], 0, None)
        diff = np.abs(_decode(answer["image"]).astype(int) - original)[y0:y1, x0:x1].max(2)
        return int((diff > 12).sum())

    left = session.preview({"smile": 3.0}, face=0)
    right = session.preview({"smile": 3.0}, face=1)
    both = session.preview({"smile": 3.0}, face="all")
    assert [f["edited"] for f in left["faces"]] == [True, False] and left["select"] == "0"
    assert [f["edited"] for f in right["faces"]] == [False, True]
    assert [f["edited"] for f in both["faces"]] == [True, True]
    assert changed(left, "astronaut") > 50 and changed(left, "carphone") < 5
    assert changed(right, "carphone") > 50 and changed(right, "astronaut") < 5
    assert changed(both, "carphone") > 50 and changed(both, "astronaut") > 50

    for bad in ("middle", -1, 8, True, 1.5, "1", [0]):
        with pytest.raises(UiError, match="face"):
            session.preview({}, face=bad)
    assert session.preview({}, frame=3)["select"] == "all"  # the choice stays with the frame

    import vidinv.pipeline.clip

    seen = []
    monkeypatch.setattr(vidinv.pipeline.clip, "process_video",
                        lambda source, output, bundle, config, editor, **kw:
                        seen.append((config.face.select, config.face.reference)))
    job = session.start_render({"smile": 1.0}, face=1)
    session.jobs[job["job"]].thread.join(30)
    assert seen == [("1", "")]


def test_cli_ui_takes_the_face_choice_of_edit(tmp_path, monkeypatch, capsys, model):
    """`vidinv ui --face/--face-ref` parse as `edit`'s do, and the page starts from them: with
    --face-ref of the man on the phone, only he is edited in the preview."""
    import cv2

    import vidinv.ui.server
    from tests.media import people_photos
    from vidinv.cli import main

    served = []
    monkeypatch.setattr(vidinv.ui.server, "serve", lambda **kw: served.append(kw) or 0)
    assert main(["ui", "--no-browser", "--face", "1"]) == 0
    assert served[-1]["config"].face.select == "1"
    for bad, said in ((["--face", "left"], "face.select"),
                      (["--face-ref", str(tmp_path / "nobody.jpg")], "no such file")):
        capsys.readouterr()
        assert main(["ui", "--no-browser", *bad]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and said in err, err
    photo = tmp_path / "carphone.png"
    cv2.imwrite(str(photo), cv2.cvtColor(people_photos()["carphone"], cv2.COLOR_RGB2BGR))
    assert main(["ui", "--no-browser", "--face-ref", str(photo)]) == 0
    config = served[-1]["config"]
    assert config.face.reference == str(photo)

    session = UiSession(tmp_path / "ui", default_model=str(model), config=config)
    try:
        _, clip = _people_upload(session, tmp_path)
        opened = session.open(clip.id, None)
        assert [face["edited"] for face in opened["faces"]] == [False, True]  # left to right
    finally:
        session.close()


def test_the_chosen_region_reaches_the_render(session, monkeypatch):
    import vidinv.pipeline.clip

    seen = []

    def capture(source, output, bundle, config, editor, **kwargs):
        seen.append(config.face.region)

    monkeypatch.setattr(vidinv.pipeline.clip, "process_video", capture)
    clip = session.add_bundled_clip()
    session.open(clip.id, None)
    session.preview({}, region=["mouth", "eyes"])
    for region, expected in ((None, "mouth,eyes"), ("lower", "lower"), (["face"], "face")):
        job = session.start_render({"smile": 1.0}, region)
        session.jobs[job["job"]].thread.join(30)
        assert seen[-1] == expected


def clip_size(server, opened) -> int:
    token = opened["original_url"].split("/")[2]
    return server.session.file_for(token).stat().st_size


# --- the page in a real browser --------------------------------------------------------------


def _browser():
    needed(Path(CHROMIUM).is_file() and Path(CHROMEDRIVER).is_file(),
           f"the system browser ({CHROMIUM} and {CHROMEDRIVER}: "
           "apt-get install chromium chromium-driver)")
    webdriver = require("selenium.webdriver", "pip install selenium")
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

    driver = _browser()  # skips (fails under CI) without chromium, chromedriver or selenium
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

        # The frame slider: the clip's frames, End moves the preview to the last one.
        frame = driver.find_element("id", "frame")
        assert (frame.get_attribute("min"), frame.get_attribute("max")) == ("0", "119")
        original = driver.find_element("id", "original").get_attribute("src")
        before, version = preview.get_attribute("src"), int(preview.get_attribute("data-version"))
        frame.send_keys(Keys.END)
        _wait(driver, lambda d: "frame 119" in d.find_element("id", "original-caption").text
              and int(preview.get_attribute("data-version")) > version, 120,
              "the preview to move to frame 119")
        assert driver.find_element("id", "frame-value").text == "119"
        assert driver.find_element("id", "original").get_attribute("src") != original
        assert preview.get_attribute("src") != before

        # A region checkbox: the mouth only (the whole face is unchecked), a new preview.
        before, version = preview.get_attribute("src"), int(preview.get_attribute("data-version"))
        driver.find_element("id", "region-mouth").click()
        _wait(driver, lambda d: d.execute_script(
            "return !previewBusy && !previewAgain") and int(preview.get_attribute(
                "data-version")) > version, 60, "the preview to follow the region")
        assert not driver.find_element("id", "region-face").is_selected()
        assert driver.execute_script("return regions()") == ["mouth"]
        assert preview.get_attribute("src") != before
        assert server.session._region == "mouth"

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

        # The face choice: a clip of two people, a box per face; clicking one edits it.
        from tests.media import make_people_clip

        two = make_people_clip(tmp_path / "two_people.mp4", "crossing", n_frames=6).path
        driver.find_element("id", "clip-file").send_keys(str(two))
        _wait(driver, lambda d: state(d) == "ready" and "two_people" in d.find_element(
            "id", "message").text, 120, "the two-people clip to open")
        _wait(driver, lambda d: len(d.find_elements("css selector", ".facebox")) == 2, 10,
              "a box on each face")
        boxes = driver.find_elements("css selector", ".facebox")
        assert boxes[0].location["x"] < boxes[1].location["x"]
        assert driver.find_element("id", "face-largest").is_selected()
        version = int(preview.get_attribute("data-version"))
        smile = driver.find_element("id", "slider-smile")  # a new clip starts at 0
        smile.click()
        for _ in range(25):
            smile.send_keys(Keys.ARROW_RIGHT)
        _wait(driver, lambda d: d.execute_script(
            "return !previewBusy && !previewAgain") and int(preview.get_attribute(
                "data-version")) > version and float(smile.get_attribute("value")) >= 2.0, 60,
              "the smile to be previewed")
        boxes = driver.find_elements("css selector", ".facebox")
        edited = ["edited" in box.get_attribute("class") for box in boxes]
        assert sorted(edited) == [False, True]  # the largest face only
        other = edited.index(False)  # click the face not edited yet
        before, version = preview.get_attribute("src"), int(preview.get_attribute("data-version"))
        driver.find_element("id", f"face-box-{other}").click()
        _wait(driver, lambda d: d.execute_script(
            "return !previewBusy && !previewAgain") and int(preview.get_attribute(
                "data-version")) > version, 60, "the preview to edit the face clicked")
        assert driver.find_element("id", "face-one").is_selected()
        assert "edited" in driver.find_element("id", f"face-box-{other}").get_attribute("class")
        assert "edited" not in driver.find_element(
            "id", f"face-box-{1 - other}").get_attribute("class")
        assert server.session._select == str(other)
        assert preview.get_attribute("src") != before
        version = int(preview.get_attribute("data-version"))
        driver.find_element("id", "face-all").click()
        _wait(driver, lambda d: int(preview.get_attribute("data-version")) > version and all(
            "edited" in b.get_attribute("class")
            for b in d.find_elements("css selector", ".facebox")), 60, "every face edited")

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


# --- who may call it, and what it takes ------------------------------------------------------


def _raw(server, method: str, path: str, headers: dict[str, str], body: bytes = b"",
         token: bool = True) -> tuple[int, dict[str, str], bytes]:
    """One request over http.client, headers exactly as given (plus the token header)."""
    import http.client

    connection = http.client.HTTPConnection(HOST_PORT(server)[0], HOST_PORT(server)[1],
                                            timeout=30)
    try:
        connection.putrequest(method, path, skip_accept_encoding=True,
                              skip_host="Host" in headers)
        for name, value in {**({"X-Vidinv-Token": server.token} if token else {}),
                            **headers}.items():
            connection.putheader(name, value)
        connection.endheaders(body or None)
        answer = connection.getresponse()
        return answer.status, dict(answer.getheaders()), answer.read()
    finally:
        connection.close()


def HOST_PORT(server) -> tuple[str, int]:  # noqa: N802 - reads like the constant it is
    return server.server_address[0], server.server_address[1]


def _json_headers(body: bytes, **extra: str) -> dict[str, str]:
    return {"Content-Type": "application/json", "Content-Length": str(len(body)), **extra}


def test_every_call_needs_the_runs_token(server):
    body = b"{}"
    for method, path, payload in (("GET", "/", b""), ("GET", "/api/state", b""),
                                  ("GET", "/files/abc/x.mp4", b""),
                                  ("POST", "/api/clip/bundled", body)):
        headers = _json_headers(payload) if payload else {}
        for token_headers in ({}, {"X-Vidinv-Token": "wrong"},
                              {"Cookie": f"{server.cookie_name}=wrong"},
                              {"Cookie": f"vidinv_ui_1={server.token}"}):  # another port's
            status, _, answer = _raw(server, method, path, {**headers, **token_headers}, payload,
                                     token=False)
            assert status == 403, (method, path, token_headers)
            assert "token" in json.loads(answer)["error"]
    # the printed URL: the page, and an HttpOnly SameSite=Strict cookie for its later calls
    status, headers, page = _raw(server, "GET", "/?token=" + server.token, {}, token=False)
    assert status == 200 and b'id="preview"' in page
    cookie = headers["Set-Cookie"]
    assert cookie.startswith(f"{server.cookie_name}={server.token};")
    assert "HttpOnly" in cookie and "SameSite=Strict" in cookie
    for token_headers in ({"Cookie": f"{server.cookie_name}={server.token}"},
                          {"X-Vidinv-Token": server.token}):
        status, headers, _ = _raw(server, "GET", "/api/state", token_headers, token=False)
        assert status == 200 and "Set-Cookie" not in headers
    status, _, _ = _raw(server, "POST", "/api/clip/bundled?token=" + server.token,
                        _json_headers(body), body, token=False)
    assert status == 200


def test_calls_from_another_site_are_refused(server):
    body = b"{}"
    own = server.origin
    for extra in ({"Origin": "http://evil.test"}, {"Origin": "null"},
                  {"Origin": own + ".evil.test"}, {"Origin": "http://127.0.0.1:1"},
                  {"Referer": "http://evil.test/page"},
                  {"Referer": own + ".evil.test/"},
                  {"Sec-Fetch-Site": "cross-site", "Origin": own},
                  {"Host": "evil.test"}, {"Host": "127.0.0.1.evil.test"}):
        status, _, answer = _raw(server, "POST", "/api/clip/bundled",
                                 _json_headers(body, **extra), body)
        assert status == 403, extra
        assert "\n" not in json.loads(answer)["error"]
    # two Host headers (the first one ours): refused, not read as the first
    request = (b"POST /api/clip/bundled HTTP/1.1\r\nHost: 127.0.0.1\r\nHost: evil.test\r\n"
               b"X-Vidinv-Token: " + server.token.encode() + b"\r\nContent-Type: "
               b"application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}")
    assert _exchange(server, request).startswith(b"HTTP/1.1 403 ")
    for extra in ({"Origin": own}, {"Origin": own.replace("127.0.0.1", "localhost")},
                  {"Referer": own + "/?token=x"}, {"Sec-Fetch-Site": "same-origin"}, {}):
        status, _, _ = _raw(server, "POST", "/api/clip/bundled", _json_headers(body, **extra),
                            body)
        assert status == 200, extra


def test_bodies_are_json_bounded_and_checked(server, caplog):
    from vidinv.ui.server import MAX_JSON_BYTES

    caplog.set_level("INFO", logger="vidinv.ui.server")
    # what a cross-site form can send without a preflight is not JSON: refused
    for content_type in ("text/plain", "application/x-www-form-urlencoded",
                         "multipart/form-data; boundary=x", ""):
        status, error = _post(server, "api/clip/bundled", b"{}", content_type=content_type)
        assert status == 415 and "application/json" in error["error"], content_type
    status, _ = _post(server, "api/clip/bundled", b"{}",
                      content_type="application/json; charset=utf-8")
    assert status == 200
    big = b'{"strengths": {"smile": 1}, "pad": "' + b"x" * MAX_JSON_BYTES + b'"}'
    assert _post(server, "api/preview", big)[0] == 413
    deep = b"[" * 100_000 + b"]" * 100_000
    status, error = _raw_json(server, "/api/preview", b'{"strengths": ' + deep[:60000] + b"}")
    assert status == 400 and "nested" in error["error"]
    status, clip = _post(server, "api/clip/bundled", {})
    for request, words in (({"clip": clip["clip"], "model": 5}, "model must be a string"),
                           ({"clip": clip["clip"], "model": ["x"]}, "model must be a string"),
                           ({"clip": clip["clip"], "model": "/etc"}, "only the model folders"),
                           ({"clip": 7}, "clip must be a string"),
                           ({"clip": "nope"}, "that clip is gone")):
        status, error = _post(server, "api/open", request)
        assert status in (400, 403, 404) and words in error["error"], (request, error)
    status, opened = _post(server, "api/open", {"clip": clip["clip"]})
    assert status == 200
    for strengths in ({"smile": "1"}, {"smile": True}, {"smile": None}, {"smile": 1e308 * 10},
                      {"smile": 10**4000}, {"smile": [1]}, [1], "x"):
        body = json.dumps({"strengths": strengths}).encode()  # 1e309 is written "Infinity"
        status, error = _raw_json(server, "/api/preview", body)
        assert status == 400 and "\n" not in error["error"], strengths
    status, error = _raw_json(server, "/api/preview", b'{"strengths": {"smile": ' +
                              b"9" * 5000 + b"}}")
    assert status == 400, error
    status, error = _raw_json(server, "/api/preview", b'{"strengths": {"smile": NaN}}')
    assert status == 400, error
    assert not [r for r in caplog.records if r.levelname == "ERROR"]  # no 500, no traceback


def _raw_json(server, path: str, body: bytes) -> tuple[int, dict]:
    status, _, answer = _raw(server, "POST", path, _json_headers(body), body)
    return status, json.loads(answer)


def _exchange(server, request: bytes, wait: float = 10.0) -> bytes:
    """Send raw bytes on one connection; everything the server answers until it closes."""
    import socket

    with socket.create_connection(HOST_PORT(server), timeout=wait) as connection:
        connection.sendall(request)
        received = b""
        try:
            while chunk := connection.recv(65536):
                received += chunk
        except TimeoutError:
            received += b"<still open>"
        return received


def test_malformed_framing_is_a_4xx_and_the_connection_closes(server, caplog):
    caplog.set_level("INFO", logger="vidinv.ui.server")
    smuggled = (b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Vidinv-Token: "
                + server.token.encode() + b"\r\n\r\n")
    head = (b"POST /api/clip/bundled HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
            b"application/json\r\nX-Vidinv-Token: " + server.token.encode() + b"\r\n")
    for framing, status in ((b"Content-Length: abc\r\n", 400), (b"Content-Length: -5\r\n", 400),
                            (b"Content-Length: 1e3\r\n", 400),
                            (b"Content-Length: 5\r\nContent-Length: 6\r\n", 400),
                            (b"Content-Length: 53687091200\r\n", 413),  # 50 GB
                            (b"Content-Length: " + b"9" * 5000 + b"\r\n", 400),
                            (b"Transfer-Encoding: chunked\r\n", 411)):
        answer = _exchange(server, head + framing + b"\r\n" + smuggled)
        assert answer.startswith(f"HTTP/1.1 {status} ".encode()), (framing, answer[:200])
        assert b"Connection: close" in answer, framing
        assert answer.count(b"HTTP/1.1 ") == 1, framing  # the smuggled GET was never answered
    # a refused upload: its body (here a request) is never read, nor parsed as a request
    upload = (b"POST /api/clip/upload?name=a.mp4 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: "
              b"text/plain\r\nX-Vidinv-Token: " + server.token.encode()
              + b"\r\nContent-Length: " + str(len(smuggled)).encode() + b"\r\n\r\n" + smuggled)
    answer = _exchange(server, upload)
    assert answer.startswith(b"HTTP/1.1 415 ") and answer.count(b"HTTP/1.1 ") == 1
    # a 5000-digit Range is ignored (the whole file), a backwards one is 416
    status, clip = _post(server, "api/clip/bundled", {})
    _, opened = _post(server, "api/open", {"clip": clip["clip"]})
    size = clip_size(server, opened)
    for header, expected in (("bytes=" + "9" * 5000 + "-", (200, size)),
                             ("bytes=-" + "9" * 5000, (200, size)),
                             ("bytes=0-1,5-9", (200, size)), ("bytes=50-10", (416, 0)),
                             (f"bytes={size}-", (416, 0)), ("bytes=-10", (206, 10))):
        status, body = _get(server, opened["original_url"], {"Range": header})
        assert (status, len(body)) == expected, header
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
    refusals = [r.getMessage() for r in caplog.records if r.getMessage().startswith("refused")]
    assert refusals and all("\n" not in line for line in refusals)


def test_uploads_are_bounded_checked_and_replaced(tmp_path, model):
    server = make_server(0, model=str(model), workdir=tmp_path / "served",
                         max_upload_bytes=200_000)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    from tests.media import real_clip_head

    try:
        clip_bytes = real_clip_head(tmp_path / "clip.mp4", 6).read_bytes()
        assert len(clip_bytes) < 200_000

        def upload(name: str, data: bytes, content_type="application/octet-stream"):
            status, _, answer = _raw(server, "POST", "/api/clip/upload?name=" + name,
                                     {"Content-Type": content_type,
                                      "Content-Length": str(len(data))}, data)
            return status, json.loads(answer)

        assert upload("a.mp4", clip_bytes, "text/plain")[0] == 415
        # larger than the limit: refused from the declared length, before the body is read
        answer = _exchange(server, b"POST /api/clip/upload?name=big.mp4 HTTP/1.1\r\nHost: "
                           b"127.0.0.1\r\nContent-Type: application/octet-stream\r\n"
                           b"X-Vidinv-Token: " + server.token.encode() +
                           b"\r\nContent-Length: 200001\r\n\r\n", wait=5)
        assert answer.startswith(b"HTTP/1.1 413 ") and b"<still open>" not in answer
        assert b"--max-upload-mb" in answer
        # what is no video file is refused, and nothing of it stays
        secret = tmp_path / "secret.mp4"
        secret.write_bytes(clip_bytes)
        playlist = (f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{secret}\n"
                    "#EXT-X-ENDLIST\n").encode()
        concat = f"ffconcat version 1.0\nfile '{secret.name}'\n".encode()
        for name, data, words in (("list.m3u8", playlist, "playlist"),
                                  ("list.mp4", playlist, "playlist"),
                                  ("cat.mp4", concat, "concat list"),
                                  ("notes.txt", b"just some words\n" * 20, "text file"),
                                  ("notes.mp4", b"just some words\n" * 20, "text file")):
            status, error = upload(name, data)
            assert status == 400 and words in error["error"], (name, error)
            assert name in error["error"] and str(server.session.workdir) not in error["error"]
        uploads = server.session.workdir / "uploads"
        assert not list(uploads.iterdir())
        status, first = upload("first.mp4", clip_bytes)
        assert status == 200 and first["frames"] == 6
        status, second = upload("second.mp4", clip_bytes)
        assert status == 200
        assert [p.name for p in uploads.iterdir()] == [second["clip"]]  # the first is gone
        status, error = _post(server, "api/open", {"clip": first["clip"]})
        assert status == 404 and "newer upload" in error["error"]
    finally:
        server.shutdown()
        server.close()
    assert not (tmp_path / "served").exists()


def test_parallel_renders_start_one_and_renders_are_dropped_when_replaced(server):
    import concurrent.futures

    _, clip = _post(server, "api/clip/bundled", {})
    assert _post(server, "api/open", {"clip": clip["clip"]})[0] == 200
    barrier = threading.Barrier(6)

    def render(_):
        barrier.wait()
        return _post(server, "api/render", {"strengths": {"smile": 1.0}})

    with concurrent.futures.ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(render, range(6)))
    statuses = sorted(status for status, _ in answers)
    assert statuses == [200, 409, 409, 409, 409, 409], answers
    assert all("already running" in answer["error"] for status, answer in answers
               if status == 409)
    job = next(answer for status, answer in answers if status == 200)
    deadline = time.monotonic() + 300
    while not (state := json.loads(_get(server, f"api/job/{job['job']}")[1]))["finished"]:
        assert time.monotonic() < deadline
        time.sleep(0.2)
    assert state["error"] is None
    renders = server.session.workdir / "renders"
    assert [p.name for p in renders.iterdir()] == [job["job"]]
    # opening the clip again hides the render on the page: its file goes
    assert _post(server, "api/open", {"clip": clip["clip"]})[0] == 200
    assert not list(renders.iterdir())
    assert _get(server, state["url"])[0] == 404
    assert _get(server, f"api/job/{job['job']}")[0] == 404


def test_a_burst_of_connections_is_queued_not_lost(tmp_path, model):
    """40 clients connect while the server is not accepting (all its threads busy): the
    listen backlog holds them all, and each is answered once the server accepts."""
    import socket

    server = make_server(0, model=str(model), workdir=tmp_path / "served")
    assert server.request_queue_size >= 64
    sockets, serving = [], None
    try:
        for _ in range(40):  # the server accepts nothing yet: only the backlog holds them
            connection = socket.create_connection(HOST_PORT(server), timeout=0.9)
            sockets.append(connection)
        request = (b"GET /api/state HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n"
                   b"X-Vidinv-Token: " + server.token.encode() + b"\r\n\r\n")
        for connection in sockets:
            connection.sendall(request)
        serving = threading.Thread(target=server.serve_forever, daemon=True)
        serving.start()
        for connection in sockets:
            connection.settimeout(30)
            answer = b""
            while chunk := connection.recv(65536):
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    finally:
        for connection in sockets:
            connection.close()
        if serving is not None:
            server.shutdown()
        server.close()


# --- stopping ----------------------------------------------------------------------------------


def _sigint_as_on_a_terminal() -> None:
    """In the child before it starts: Ctrl-C's default action, whatever this test run
    inherited (a run started in the background of a script ignores SIGINT, and a Python
    started with SIGINT ignored keeps ignoring it: the Ctrl-C test would wait for ever)."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _start_ui(model: Path, tmp: Path, *extra: str):
    import subprocess
    import sys

    tmp.mkdir(exist_ok=True)
    env = {**os.environ, "TMPDIR": str(tmp)}
    return subprocess.Popen([sys.executable, "-m", "vidinv.cli", "ui", "--no-browser",
                             "--model", str(model), *extra], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env,
                            preexec_fn=_sigint_as_on_a_terminal)


def test_a_port_no_socket_can_have_is_one_line_and_leaves_no_folder(model, tmp_path):
    for port in ("99999", "-1"):
        process = _start_ui(model, tmp_path / "tmp", "--port", port)
        out, err = process.communicate(timeout=120)
        assert process.returncode == 2, err
        assert err.strip() == (f"vidinv: error: --port must be between 0 and 65535 (got {port});"
                               " leave it out for 7860 or a free one"), err
        assert not list((tmp_path / "tmp").glob("vidinv-ui-*"))


@pytest.mark.parametrize("signal_name, returncode, last_line", [
    ("SIGINT", 0, "vidinv ui: stopped"), ("SIGTERM", 143, "vidinv: stopped by SIGTERM")])
def test_a_signal_during_a_render_stops_cleanly(model, tmp_path, signal_name, returncode,
                                                last_line):
    """Ctrl-C or SIGTERM while a render runs: the render stops at its next frame and its
    threads end before the interpreter does (no "terminate called", no SIGABRT), and the
    run's temporary folder is gone."""
    import signal

    process = _start_ui(model, tmp_path / "tmp", "--port", "0")
    try:
        url = process.stdout.readline().split()[2]
        base, token = url.split("/?token=")
        assert len(list((tmp_path / "tmp").glob("vidinv-ui-*"))) == 1  # the run's folder

        def call(path: str, body: dict | None = None) -> dict:
            data = None if body is None else json.dumps(body).encode()
            request = urllib.request.Request(base + path, data=data, headers={
                "X-Vidinv-Token": token, "Content-Type": "application/json"})
            with urllib.request.urlopen(request, timeout=120) as answer:
                return json.load(answer)

        clip = call("/api/clip/bundled", {})
        call("/api/open", {"clip": clip["clip"]})
        job = call("/api/render", {"strengths": {"smile": 1.0}})
        deadline = time.monotonic() + 120
        while (state := call(f"/api/job/{job['job']}"))["done"] < 2:
            assert not state["finished"] and time.monotonic() < deadline, state
            time.sleep(0.02)
        process.send_signal(getattr(signal, signal_name))
        out, err = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert state["done"] < state["total"]  # the signal came mid-render
    assert process.returncode == returncode, err
    assert "terminate called" not in err and "Traceback" not in err, err
    assert err.strip().splitlines()[-1] == last_line, err
    assert not list((tmp_path / "tmp").glob("vidinv-ui-*"))  # uploads, renders: all gone


def test_a_stalled_or_vanished_client_frees_its_thread_quietly(server, monkeypatch, capsys,
                                                               caplog):
    """A body that never comes ends at the idle timeout (the thread is freed); a client gone
    before its answer is no traceback."""
    import socket

    from vidinv.ui import server as server_module

    monkeypatch.setattr(server_module._Handler, "timeout", 1)
    stalled = (b"POST /api/preview HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Vidinv-Token: "
               + server.token.encode() + b"\r\nContent-Type: application/json\r\n"
               b"Content-Length: 100\r\n\r\n{}")
    started = time.monotonic()
    assert _exchange(server, stalled, wait=20) == b""  # dropped, nothing to answer
    assert time.monotonic() - started < 10
    with socket.create_connection(HOST_PORT(server), timeout=5) as connection:
        connection.sendall(stalled)  # and leave before the answer
    many = (b"GET /api/state?" + b"&".join(b"f%d=1" % i for i in range(50)) + b" HTTP/1.1\r\n"
            b"Host: 127.0.0.1\r\nConnection: close\r\nX-Vidinv-Token: " + server.token.encode()
            + b"\r\n\r\n")
    assert _exchange(server, many).startswith(b"HTTP/1.1 400 ")
    time.sleep(1.5)
    assert server.wait_until_idle(10)
    assert "Traceback" not in capsys.readouterr().err
    assert not [r for r in caplog.records if r.levelname == "ERROR"]
