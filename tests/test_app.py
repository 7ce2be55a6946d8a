"""The web demo (tools/app.py, projects/salma/app.py) on a tiny exported model.

Without a browser: uploads (image, video file, zip of frames) and their errors, regions, the
legend, the mask files. Through the API route: gradio_client. In a real headless Chromium
(Debian's chromium + chromium-driver, driven by Selenium; nothing downloads a browser build): the
page is opened, a synthetic image (then a zip of frames) uploaded, an expression typed and sent,
and the overlay the page shows is decoded and compared, pixel for pixel, with
``SALMAModel.predict`` on the same input. The app runs in this process, in a thread, under
``forced_answer``: the real generation is steered to answer with two ``[SEG]`` (a random LLM
rarely emits one), so the masks are non-trivial and come from the real predict path.

Browser tests skip, with the reason, where chromium, chromedriver or selenium is missing, and fail
instead with ``SALMA_REQUIRE_BROWSER=1`` (CI: .ci/run sets it).
"""
import base64
import io
import json
import os
import queue
import shutil
import subprocess
import sys
import threading
import time
import urllib.request
import zipfile
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from projects.salma.app import (MODES, SegmentationDemo, launch, legend_html, painted_regions, parse_boxes,
                                read_upload, seg_phrases)
from projects.salma.datasets.errors import DataError
from projects.salma.datasets.synthetic import draw_scene, make_shapes, moving_scene, write_video_file
from projects.salma.build import build_model
from projects.salma.evaluation.visualize import PALETTE, display_scale
from projects.salma.salma_model import SALMAModel, as_salma_model
from projects.salma.testing import assert_nontrivial_masks, forced_answer, free_port

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = os.path.join(ROOT, "configs", "tiny", "salma_tiny.py")
EXPRESSION = "the red circle"
ANSWER = "Sure: <p>the red circle</p> [SEG] and <p>the rest</p> [SEG]."
REGION_QUESTION = "What is in region1?"
CHROMIUM_FLAGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync")
WAIT = 60  # seconds the page may take to show a result (2 shared CPU cores)


def unavailable(reason: str):
    """Skip (a user without the app's requirements), or fail where CI requires them."""
    if os.environ.get("SALMA_REQUIRE_BROWSER") == "1":
        pytest.fail(reason + "; SALMA_REQUIRE_BROWSER=1 makes this a failure")
    pytest.skip(reason)


def require_gradio():
    try:
        import gradio  # noqa: F401
        import gradio_client  # noqa: F401
    except ImportError:
        unavailable("the web demo needs gradio (README: pip install -c constraints.txt -r requirements-app.txt)")


# ------------------------------------------------------------------ the model and inputs
@pytest.fixture(scope="module")
def export_dir(tmp_path_factory):
    """A tiny SALMA exported as tools/export.py writes it (random weights, CMA switched on, random
    SAM-2 memory modules for video propagation)."""
    cfg = Config.fromfile(TINY)
    cfg.merge_from_dict({"test_options": dict(num_llm_frames=3, max_new_tokens=32, sam2_memory="random")})
    model = build_model(cfg, "none", torch.device("cpu"))
    with torch.no_grad():
        model.grounding_encoder.cma.gamma_attn.fill_(0.5)  # zero at init: CMA would be the identity
    out = str(tmp_path_factory.mktemp("app_export") / "salma_tiny")
    as_salma_model(cfg, model.eval()).save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model(export_dir):
    return SALMAModel.from_pretrained(export_dir, device="cpu")


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    """A synthetic scene (PNG, 128x96), five frames of a moving scene zipped in a folder, and bad
    uploads: a text file named .png, a zip holding an empty folder."""
    root = tmp_path_factory.mktemp("uploads")
    rng = np.random.default_rng(0)
    image, _, _ = draw_scene(make_shapes(rng, 96, 128), 96, 128, rng, rng.integers(150, 256, size=3))
    image.save(root / "scene.png")
    _, frames, _ = moving_scene(np.random.default_rng(1), 64, 64, 5)
    with zipfile.ZipFile(root / "clip.zip", "w") as archive:
        for t, frame in enumerate(frames):
            archive.writestr(f"clip/{t:05d}.png", _png(frame))
    (root / "bad.png").write_text("this is not an image\n")
    with zipfile.ZipFile(root / "empty.zip", "w") as archive:
        archive.writestr("frames/", b"")
    return SimpleNamespace(image=str(root / "scene.png"), array=np.asarray(image), video=str(root / "clip.zip"),
                           frames=[np.asarray(f) for f in frames], bad=str(root / "bad.png"),
                           empty=str(root / "empty.zip"))


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def decode_overlay(shown: np.ndarray, image: np.ndarray, n_masks: int) -> np.ndarray:
    """Which mask each pixel of a displayed overlay shows: -1 where it is the image itself, k where
    it is the image blended half-way with mask colour k. Small frames are shown enlarged by an
    integer factor (nearest): one pixel per block is read."""
    height, width = image.shape[:2]
    scale = shown.shape[0] // height
    assert shown.shape == (height * scale, width * scale, 3) and scale == display_scale(height, width) > 1
    blocks = shown.reshape(height, scale, width, scale, 3)
    assert (blocks == blocks[:, :1, :, :1]).all()  # every block is one source pixel
    base = image.astype(float)
    candidates = np.stack([base] + [base + 0.5 * (np.array(PALETTE[k]) - base) for k in range(n_masks)])
    error = np.abs(shown[::scale, ::scale].astype(float)[None] - candidates).max(-1)  # (1 + n, H, W)
    assert error.min(0).max() <= 1, "a pixel is neither the image nor the image blended with a mask colour"
    return error.argmin(0) - 1


def labels_of(masks: np.ndarray) -> np.ndarray:
    """-1 off the masks, else the index of the last mask covering the pixel (drawn on top)."""
    labels = np.full(masks.shape[1:], -1)
    for k, mask in enumerate(masks):
        labels[mask] = k
    return labels


def test_decode_overlay_reads_hand_made_overlays():
    """The decoder itself, on an overlay blended by hand (not by the app's code)."""
    image = np.random.default_rng(0).integers(0, 256, (4, 5, 3)).astype(np.uint8)
    labels = np.array([[-1, 0, 0, 1, -1]] * 4)
    blended = image.astype(float)
    for k in (0, 1):
        blended[labels == k] += 0.5 * (np.array(PALETTE[k]) - blended[labels == k])
    shown = np.round(blended).astype(np.uint8).repeat(display_scale(4, 5), 0).repeat(display_scale(4, 5), 1)
    assert (decode_overlay(shown, image, 2) == labels).all()
    with pytest.raises(AssertionError, match="neither"):
        decode_overlay(255 - shown, image, 2)


# ------------------------------------------------------------------ the logic, without a page
def test_uploads_are_read_as_images_videos_or_zipped_frames(inputs, tmp_path):
    media = read_upload(inputs.image)
    assert media.kind == "image" and np.array_equal(np.asarray(media.frames[0]), inputs.array)
    media = read_upload(inputs.video)
    assert media.kind == "video" and media.names == [f"{t:05d}" for t in range(5)]
    assert all(np.array_equal(np.asarray(f), g) for f, g in zip(media.frames, inputs.frames, strict=True))
    with zipfile.ZipFile(tmp_path / "mac.zip", "w") as archive:  # frames at the root, macOS debris skipped
        archive.writestr("b.png", _png(Image.fromarray(inputs.frames[1])))
        archive.writestr("a.png", _png(Image.fromarray(inputs.frames[0])))
        archive.writestr("__MACOSX/._a.png", b"junk")
        archive.writestr(".DS_Store.png", b"junk")
    media = read_upload(str(tmp_path / "mac.zip"))
    assert media.names == ["a", "b"] and np.array_equal(np.asarray(media.frames[1]), inputs.frames[1])
    write_video_file(str(tmp_path / "clip.mp4"), [Image.fromarray(f) for f in inputs.frames])
    media = read_upload(str(tmp_path / "clip.mp4"))
    assert media.kind == "video" and len(media.frames) == 5 and media.frames[0].size == (64, 64)


def _zip(path, members: dict) -> str:
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return str(path)


def test_bad_uploads_are_errors_naming_the_uploaded_file(inputs, tmp_path):
    frame = _png(Image.fromarray(inputs.frames[0]))
    cases = {
        inputs.bad: r"^bad\.png: cannot decode image",
        inputs.empty: r"^empty\.zip: no frames \(\.jpg, .*\) in this zip",
        _zip(tmp_path / "nothing.zip", {}): r"^nothing\.zip: no frames",
        _zip(tmp_path / "two.zip", {"a/0.png": frame, "b/1.png": frame}): r"^two\.zip: frames in 2 folders \('a', 'b'",
        _zip(tmp_path / "twice.zip", {"0.png": frame, "0.jpg": frame}): r"^twice\.zip: two frames named '0'",
        _zip(tmp_path / "broken.zip", {"v/0.png": frame, "v/1.png": b"oops"}): r"^broken\.zip:v/1\.png: cannot decode",
    }
    (tmp_path / "fake.zip").write_text("not a zip")
    cases[str(tmp_path / "fake.zip")] = r"^fake\.zip: not a readable zip file"
    for path, message in cases.items():
        with pytest.raises(DataError, match=message) as err:
            read_upload(path)
        assert str(tmp_path) not in str(err.value) and os.path.dirname(inputs.bad) not in str(err.value)


def test_legend_names_each_seg_by_its_phrase():
    assert seg_phrases(ANSWER) == ["the red circle", "the rest"]
    assert seg_phrases("It is [SEG].") == [None] and seg_phrases("no mask") == []
    # a [SEG] without its own phrase: the model reads the last phrase before it, so does the legend
    assert seg_phrases("<p>cat</p> [SEG] and [SEG]") == ["cat", "cat"]
    legend = legend_html("<p>a <b></p> [SEG] [SEG]", 2)
    assert "1: a &lt;b&gt;" in legend and "2: a &lt;b&gt;" in legend  # escaped, not rendered
    assert "rgb(255,40,40)" in legend and "rgb(40,120,255)" in legend  # PALETTE[0], PALETTE[1]
    assert "[SEG] 1" in legend_html("It is [SEG].", 1) and "nothing was segmented" in legend_html("No.", 0)


def test_regions_come_from_painted_layers_and_typed_boxes():
    paint = np.zeros((48, 64, 4), np.uint8)
    paint[10:20, 30:40, 3] = 255
    blank = np.zeros((48, 64, 4), np.uint8)
    twice = Image.fromarray(np.zeros((96, 128, 4), np.uint8))  # a canvas twice the image's size
    twice.paste((255, 0, 0, 255), (0, 0, 20, 40))
    masks = painted_regions({"background": None, "layers": [paint, blank, twice], "composite": None}, 48, 64)
    assert len(masks) == 2  # the blank layer is no region
    assert masks[0].sum() == 100 and masks[0][10:20, 30:40].all()
    assert masks[1].shape == (48, 64) and masks[1].sum() == 10 * 20 and masks[1][:20, :10].all()
    assert painted_regions(None, 48, 64) == []
    assert parse_boxes("1,2,30,40\n 5, 6, 7, 8 ;") == [(1, 2, 30, 40), (5, 6, 7, 8)] and parse_boxes("") == []
    with pytest.raises(ValueError, match="'1,2,3': expected x0,y0,x1,y1"):
        parse_boxes("1,2,3")


def test_video_masks_are_zipped_per_frame(model, inputs):
    demo = SegmentationDemo(model)
    media = read_upload(inputs.video)
    with forced_answer("It is [SEG]."):
        result = demo.respond(media, "the moving circle")
        expected = model.predict(video=media.frames, text="the moving circle")["masks"]  # (1, T, H, W)
    assert_nontrivial_masks(expected, "video masks")
    assert [os.path.basename(f) for f in result.files] == ["mask_1.zip"]
    with zipfile.ZipFile(result.files[0]) as archive:
        assert sorted(archive.namelist()) == [f"{n}.png" for n in media.names]
        for t, name in enumerate(media.names):
            png = np.asarray(Image.open(io.BytesIO(archive.read(f"{name}.png"))))
            assert set(np.unique(png)) <= {0, 255} and np.array_equal(png > 0, expected[0, t].numpy())
    assert [caption for _, caption in result.frames] == ["frame 00000 (LLM)", "frame 00001 (LLM)",
                                                        "frame 00002 (LLM)", "frame 00003", "frame 00004"]
    with pytest.raises(ValueError, match="regions are for an image"):
        demo.respond(media, "What is in region1?", regions=[(0, 0, 10, 10)])
    demo.close()
    assert not os.path.exists(demo.work_dir)


# ------------------------------------------------------------------ the server
@pytest.fixture(scope="module")
def server(model, export_dir, tmp_path_factory):
    """The app on a free local port, in this process (a thread), under forced_answer; ``calls``
    records what the page asked ``SegmentationDemo.respond`` and what it returned."""
    require_gradio()
    saved = os.environ.get("GRADIO_TEMP_DIR")
    os.environ["GRADIO_TEMP_DIR"] = str(tmp_path_factory.mktemp("gradio"))  # uploads and outputs stay in tmp
    demo = SegmentationDemo(model, name=export_dir)
    calls = []
    respond = demo.respond

    def recorded(media, text, **kwargs):
        result = respond(media, text, **kwargs)
        calls.append(SimpleNamespace(media=media, text=text, kwargs=kwargs, result=result))
        return result

    demo.respond = recorded
    prompts = []

    def steered(prompt):
        prompts.append(prompt)
        return ANSWER

    with forced_answer(steered):
        app, url = launch(demo, port=free_port(), block=False)
        try:
            yield SimpleNamespace(url=url, calls=calls, prompts=prompts)
        finally:
            app.close()
            demo.close()
            if saved is None:
                os.environ.pop("GRADIO_TEMP_DIR", None)
            else:
                os.environ["GRADIO_TEMP_DIR"] = saved


def test_api_route_answers_like_predict(server, model, inputs):
    from gradio_client import Client, handle_file
    from gradio_client.exceptions import AppError

    client = Client(server.url, verbose=False)
    chat, answer, overlay, gallery, legend, files = client.predict(
        handle_file(inputs.image), None, "", MODES[0], EXPRESSION, 32, api_name="/segment")
    expected = model.predict(image=inputs.array, text=EXPRESSION)  # steered as the server is
    assert answer == expected["text"] == ANSWER and gallery in (None, [])
    assert_nontrivial_masks(expected["masks"], "predict masks")
    assert [os.path.basename(f) for f in files] == ["mask_1.png", "mask_2.png"]
    for path, mask in zip(files, expected["masks"].numpy(), strict=True):
        assert np.array_equal(np.asarray(Image.open(path)) > 0, mask)
    shown = np.asarray(Image.open(overlay).convert("RGB"))
    assert (decode_overlay(shown, inputs.array, 2) == labels_of(expected["masks"].numpy())).all()
    assert "1: the red circle" in legend and "2: the rest" in legend
    assert [m["role"] for m in chat] == ["user", "assistant"]

    with pytest.raises(AppError, match=r"bad\.png: cannot decode image"):
        client.predict(handle_file(inputs.bad), None, "", MODES[0], EXPRESSION, 32, api_name="/segment")
    # a chat: the second question is asked after the first turn (the session keeps the chat)
    chat_client = Client(server.url, verbose=False)
    chat_client.predict(handle_file(inputs.image), None, "", MODES[1], "Describe the scene.", 32, api_name="/segment")
    chat_client.predict(handle_file(inputs.image), None, "", MODES[1], "And the circle?", 32, api_name="/segment")
    assert server.calls[-1].kwargs["history"] == [("Describe the scene.", ANSWER)]
    assert server.prompts[-1].count("Describe the scene.") == 1 and ANSWER in server.prompts[-1]
    assert server.prompts[-1].endswith("And the circle?<|im_end|>\n<|im_start|>assistant\n")


@pytest.mark.slow
def test_cli_serves_the_page_and_prints_its_address(export_dir, tmp_path):
    """tools/app.py as a user runs it: the flags reach the model, the address is printed, the page answers."""
    require_gradio()
    port = free_port()
    (tmp_path / "tmp").mkdir()
    env = {**os.environ, "PYTHONPATH": ROOT, "OMP_NUM_THREADS": "1", "GRADIO_TEMP_DIR": str(tmp_path / "gradio"),
           "TMPDIR": str(tmp_path / "tmp")}
    process = subprocess.Popen([sys.executable, os.path.join(ROOT, "tools", "app.py"), "--model", export_dir,
                                "--device", "cpu", "--dtype", "bfloat16", "--port", str(port)],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env, cwd=ROOT)
    lines = queue.Queue()
    threading.Thread(target=lambda: [lines.put(line) for line in process.stdout], daemon=True).start()
    try:
        deadline, address, output = time.monotonic() + 120, None, []
        while address is None and time.monotonic() < deadline and process.poll() is None:
            try:
                output.append(lines.get(timeout=1))
            except queue.Empty:
                continue
            if output[-1].startswith("SALMA demo on "):
                address = output[-1]
        url = f"http://127.0.0.1:{port}/"
        assert address is not None, "".join(output)
        assert address.startswith(f"SALMA demo on {url} (Model {export_dir} runs on cpu in bfloat16")
        with urllib.request.urlopen(url + "config", timeout=30) as page:  # what the page is built from
            config = json.load(page)
        assert config["title"] == "SALMA demo"
        info = [c["props"]["value"] for c in config["components"] if c["props"].get("elem_id") == "model-info"]
        assert len(info) == 1 and "runs on **cpu** in **bfloat16**" in info[0]
    finally:
        process.terminate()  # as a service manager stops it: the page closes, its files go
        process.wait(timeout=30)
    assert process.returncode == 0 and os.listdir(tmp_path / "tmp") == []


def test_ci_runs_the_readme_test_command():
    """CI runs what the README tells a user to run, with the browser tests required."""
    readme = open(os.path.join(ROOT, "README.md"), encoding="utf-8").read()
    command = readme.split("Install and run the test suite")[1].split("```bash\n")[1].split("\n```")[0]
    ci = open(os.path.join(ROOT, ".ci", "run"), encoding="utf-8").read()
    assert "export SALMA_REQUIRE_BROWSER=1\n" in ci and ci.rstrip("\n").endswith("\n" + command)
    assert "tools/install_test_browser.sh" in command and "requirements-app.txt" in command


# ------------------------------------------------------------------ the page, in Chromium
@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    """Headless Debian chromium through its chromedriver (both from apt; Selenium is only told
    their paths and downloads nothing)."""
    missing = [name for name in ("chromium", "chromedriver") if shutil.which(name) is None]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("selenium (pip, requirements-test.txt)")
    if missing:
        unavailable(f"browser tests need Debian's chromium and chromium-driver and selenium; missing: "
                    f"{', '.join(missing)} (as root: apt-get install -y chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in CHROMIUM_FLAGS + (f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}",
                                  "--window-size=1400,1100"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"performance": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)
    yield driver
    driver.quit()


def _by():
    from selenium.webdriver.common.by import By

    return By


def _wait(driver, condition, what: str, *, errors: bool = False):
    """Wait for ``condition``; an error shown by the page meanwhile fails at once with its text
    (unless ``errors``: the test waits for one)."""
    from selenium.webdriver.support.ui import WebDriverWait

    def check(d):
        if not errors:
            shown = [e.text for e in d.find_elements(_by().CSS_SELECTOR, ".toast-body.error")]
            assert not shown, f"waiting for {what}, the page shows an error: {shown}"
        return condition(d)

    return WebDriverWait(driver, WAIT, poll_frequency=0.1).until(check, message=what)


def open_page(driver, url):
    driver.get(url)
    _wait(driver, lambda d: d.find_elements(_by().CSS_SELECTOR, "#media input[type=file]"), "the upload field")


def upload(driver, path, shown: str):
    driver.find_element(_by().CSS_SELECTOR, "#media input[type=file]").send_keys(path)
    if shown:
        _wait(driver, lambda d: shown in d.find_element(_by().ID, "media-info").text, f"upload of {path}")


def send(driver, text):
    box = driver.find_element(_by().CSS_SELECTOR, "#text textarea")
    box.clear()
    box.send_keys(text)
    driver.find_element(_by().ID, "submit").click()


def loaded_images(driver, selector: str, old: tuple = ()) -> list:
    """The <img> under ``selector`` once the browser has decoded them, if their sources changed."""
    images = driver.find_elements(_by().CSS_SELECTOR, selector)
    sources = tuple(im.get_attribute("src") for im in images)
    ready = images and sources != tuple(old) and all(
        driver.execute_script("return arguments[0].complete && arguments[0].naturalWidth > 0", im) for im in images)
    return images if ready else []


def displayed_pixels(driver, image) -> np.ndarray:
    """The bytes the page displays for ``image`` (its src, fetched by the page), decoded; the
    browser's own decode must agree on the size."""
    data = driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "fetch(arguments[0].src).then(r => r.arrayBuffer()).then(b => {"
        "  let s = ''; const u = new Uint8Array(b);"
        "  for (let i = 0; i < u.length; i += 0x8000) s += String.fromCharCode.apply(null, u.subarray(i, i + 0x8000));"
        "  done(btoa(s)); });", image)
    pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("RGB"))
    natural = driver.execute_script("return [arguments[0].naturalHeight, arguments[0].naturalWidth]", image)
    assert list(pixels.shape[:2]) == natural
    return pixels


def external_requests(driver) -> list[str]:
    """http(s) requests the page made to anything but this machine."""
    urls = []
    for entry in driver.get_log("performance"):
        message = json.loads(entry["message"])["message"]
        if message["method"] == "Network.requestWillBeSent":
            url = message["params"]["request"]["url"]
            if url.startswith(("http://", "https://")) and not url.startswith(("http://127.0.0.1", "http://localhost")):
                urls.append(url)
    return urls


@pytest.mark.slow
def test_browser_image_overlay_shows_predict_masks(server, browser, model, inputs, tmp_path):
    """Upload, type, send; the overlay the page shows carries predict's masks, one colour each.
    Then a region painted on the image is sent as a visual prompt."""
    started = time.perf_counter()
    open_page(browser, server.url)
    info = browser.find_element(_by().ID, "model-info").text
    assert "cpu" in info and "float32" in info
    upload(browser, inputs.image, "image, 128x96")
    send(browser, EXPRESSION)
    overlay = _wait(browser, lambda d: loaded_images(d, "#overlay img"), "the overlay")[0]
    _wait(browser, lambda d: d.find_element(_by().CSS_SELECTOR, "#answer textarea").get_attribute("value") == ANSWER,
          "the answer")
    shown = displayed_pixels(browser, overlay)
    expected = model.predict(image=inputs.array, text=EXPRESSION)["masks"].numpy()  # steered as the app is
    assert_nontrivial_masks(expected, "predict masks")
    decoded = decode_overlay(shown, inputs.array, 2)
    assert (decoded == labels_of(expected)).all()
    assert set(np.unique(decoded)) == {-1, 0, 1}  # both masks and the image show somewhere
    legend = browser.find_element(_by().ID, "legend").text
    assert "1: the red circle" in legend and "2: the rest" in legend
    listed = browser.find_element(_by().ID, "masks").text.replace("\n", "")  # name and extension in two spans
    assert "mask_1.png" in listed and "mask_2.png" in listed
    browser.save_screenshot(str(tmp_path / "app_image.png"))

    # a region painted around the image's centre, then a question about it
    from selenium.webdriver.common.action_chains import ActionChains

    canvas = browser.find_elements(_by().CSS_SELECTOR, "#regions canvas")[0]
    (ActionChains(browser).move_to_element_with_offset(canvas, -60, -40).click_and_hold().move_by_offset(120, 0)
     .move_by_offset(0, 80).move_by_offset(-120, 0).move_by_offset(0, -80).release().perform())
    before = (overlay.get_attribute("src"),)
    send(browser, REGION_QUESTION)
    overlay = _wait(browser, lambda d: loaded_images(d, "#overlay img", old=before), "the region answer's overlay")[0]
    call = server.calls[-1]
    assert call.text == REGION_QUESTION and len(call.kwargs["regions"]) == 1
    region = call.kwargs["regions"][0]
    assert region.shape == (96, 128) and region[48, 64] and 0 < region.sum() < region.size  # painted, not all
    expected = model.predict(image=inputs.array, text=REGION_QUESTION, regions=[region])["masks"].numpy()
    assert "<vp>" in server.prompts[-1]  # the region reached the LLM as a visual prompt
    assert (decode_overlay(displayed_pixels(browser, overlay), inputs.array, 2) == labels_of(expected)).all()
    assert external_requests(browser) == []
    print(f"browser image test: {time.perf_counter() - started:.1f} s")


@pytest.mark.slow
def test_browser_video_frames_show_predict_masks(server, browser, model, inputs, tmp_path):
    """A zip of frames: the page follows SAM-2's propagation frame by frame, then shows every
    frame's overlay; each carries predict's masks on that frame."""
    started = time.perf_counter()
    open_page(browser, server.url)
    upload(browser, inputs.video, "video, 5 frames of 64x64")
    browser.execute_script(  # record the progress texts the page shows while the answer runs
        "window.progressSeen = [];"
        "new MutationObserver(() => { for (const el of document.querySelectorAll('.progress-text, .progress-level')) {"
        "  const t = el.textContent.trim(); if (t && !window.progressSeen.includes(t)) window.progressSeen.push(t); }"
        "}).observe(document.body, {subtree: true, childList: true, characterData: true});")
    send(browser, "the moving circle")
    frames = _wait(browser, lambda d: (lambda ims: ims if len(ims) == 5 else [])(loaded_images(d, "#frames img")),
                   "the frame gallery")
    expected = model.predict(video=inputs.frames, text="the moving circle")["masks"].numpy()  # (2, T, H, W)
    assert_nontrivial_masks(expected, "predict masks on every frame")
    for t, image in enumerate(frames):
        shown = displayed_pixels(browser, image)
        assert (decode_overlay(shown, inputs.frames[t], 2) == labels_of(expected[:, t])).all()
    captions = browser.find_element(_by().ID, "frames").text
    assert "frame 00002 (LLM)" in captions and "frame 00004" in captions
    seen = " | ".join(browser.execute_script("return window.progressSeen"))
    assert "SAM-2 propagation" in seen and "5/5 frame" in seen, seen
    browser.save_screenshot(str(tmp_path / "app_video.png"))
    assert external_requests(browser) == []
    print(f"browser video test: {time.perf_counter() - started:.1f} s")


@pytest.mark.slow
def test_browser_bad_uploads_show_errors_and_the_app_keeps_serving(server, browser, model, inputs, tmp_path):
    started = time.perf_counter()

    def error_shown(text):
        return _wait(browser, lambda d: [e for e in d.find_elements(_by().CSS_SELECTOR, ".toast-body")
                                         if text in e.text], f"an error naming {text}", errors=True)

    open_page(browser, server.url)
    upload(browser, inputs.bad, "")
    error_shown("bad.png: cannot decode image")
    send(browser, EXPRESSION)  # sending anyway: the same error, nothing else
    _wait(browser, lambda d: len([e for e in d.find_elements(_by().CSS_SELECTOR, ".toast-message-text")
                                  if "bad.png: cannot decode image" in e.text]) >= 2, "the error again", errors=True)
    browser.save_screenshot(str(tmp_path / "app_error.png"))
    open_page(browser, server.url)
    upload(browser, inputs.empty, "")
    error_shown("empty.zip: no frames")
    open_page(browser, server.url)  # the server still answers
    upload(browser, inputs.image, "image, 128x96")
    send(browser, EXPRESSION)
    _wait(browser, lambda d: loaded_images(d, "#overlay img"), "an overlay after the errors")
    print(f"browser error test: {time.perf_counter() - started:.1f} s")
