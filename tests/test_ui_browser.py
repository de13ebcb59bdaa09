"""`x2i ui` in a real headless Chromium (Debian's chromium + chromium-driver, driven by selenium): the server starts as
a user starts it, on a free loopback port, with the default (shapes) world; the page takes a prompt and shows an
image whose PNG carries its metadata, and a corrupt upload shows x2i's one-line error on the page.

Skips (with the reason) where Chromium, its driver, Gradio or selenium is missing; .ci/run installs all of them.
X2I_UI_SCREENSHOT=PATH saves a screenshot of the page with its image (docs/ui.png was taken so).
"""
import io
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request

import numpy as np
import pytest

CHROMIUM, DRIVER = shutil.which("chromium") or shutil.which("chromium-browser"), shutil.which("chromedriver")


def needs(module: str):
    """Import a module the browser tests need, or skip them with the reason."""
    try:
        return __import__(module)
    except ImportError:
        pytest.skip(f"{module} is not installed (pip install -e '.[test]')")


START_TIMEOUT, RUN_TIMEOUT = 240, 240
CSS, XPATH, TAG = "css selector", "xpath", "tag name"  # WebDriver's locator strategies (selenium's By values)
# 2 steps keep the test fast; the screenshot for the docs is drawn with the world's own 20 steps
STEPS = "0" if os.environ.get("X2I_UI_SCREENSHOT") else "2"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """`x2i ui` as a subprocess on a free loopback port: (url, output folder)."""
    needs("gradio")
    out = tmp_path_factory.mktemp("ui-out")
    port = free_port()
    env = {**os.environ, "X2I_PLUGINS": "x2i", "HF_HUB_OFFLINE": "1", "GRADIO_ANALYTICS_ENABLED": "False",
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    log = open(out / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "x2i_cli.main", "ui", "--host", "127.0.0.1", "--port", str(port),
                             "--output-dir", str(out), "--steps", STEPS], stdout=log, stderr=subprocess.STDOUT, env=env)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.time() + START_TIMEOUT
    try:
        while True:
            if proc.poll() is not None:
                pytest.fail(f"x2i ui exited with {proc.returncode}: {(out / 'server.log').read_text()[-2000:]}")
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                pytest.fail(f"x2i ui did not answer within {START_TIMEOUT} s")
            time.sleep(1)
        yield url, out
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and DRIVER):
        pytest.skip("chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    needs("selenium")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    profile = tempfile.mkdtemp(prefix="x2i-chromium-")
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage", f"--user-data-dir={profile}", "--window-size=1280,1500"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    try:
        yield driver
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


def wait_for(condition, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.5)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def open_page(browser, url):
    browser.get(url)
    return wait_for(lambda: browser.find_elements(CSS, "#x2i-prompt textarea"), 60, "the prompt box")[0]


def test_prompt_gives_an_image_with_its_metadata(browser, server):
    from PIL import Image

    url, out = server
    box = open_page(browser, url)
    box.send_keys("a big red circle in the middle")
    browser.find_element(CSS, "#x2i-generate").click()
    image = wait_for(lambda: browser.find_elements(CSS, "#x2i-gallery img"), RUN_TIMEOUT, "an image")[0]
    wait_for(lambda: image.get_attribute("naturalWidth") not in (None, "0"), 30, "the image to load")
    details = browser.find_element(CSS, "#x2i-info textarea").get_attribute("value")
    assert "saved" in details
    with urllib.request.urlopen(image.get_attribute("src"), timeout=30) as response:  # what the page shows
        png = Image.open(io.BytesIO(response.read()))
        png.load()
    assert png.size == (64, 64) and png.format == "PNG"
    assert png.text["x2i:prompt"] == "a big red circle in the middle"
    assert png.text["x2i:steps"] == ("2" if STEPS == "2" else "20") and png.text["x2i:aligner"] == "shapes"
    assert np.asarray(png.convert("RGB"), dtype=np.float32).std() > 1  # a drawing, not a blank
    assert sorted(p.name for p in out.glob("*.png"))  # and it was saved in the output folder
    screenshot = os.environ.get("X2I_UI_SCREENSHOT")
    if screenshot:
        browser.save_screenshot(screenshot)


def test_corrupt_upload_shows_the_error_on_the_page(browser, server, tmp_path):
    url, _ = server
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n" + b"not really a picture" * 10)
    box = open_page(browser, url)
    box.send_keys("the same, but blue")
    browser.find_element(CSS, "#x2i-images input[type=file]").send_keys(str(bad))
    wait_for(lambda: "broken" in browser.find_element(CSS, "#x2i-images").text, 60, "the upload")
    browser.find_element(CSS, "#x2i-generate").click()
    text = wait_for(lambda: "cannot read image" in browser.find_element(TAG, "body").text
                    and browser.find_element(TAG, "body").text, RUN_TIMEOUT, "the error on the page")
    line = next(line for line in text.splitlines() if "cannot read image" in line)
    assert "cannot read image broken.png" in line and "Traceback" not in text  # the upload's own name
    assert not browser.find_elements(CSS, "#x2i-gallery img")  # no image for a bad prompt


def test_chat_tab_keeps_the_dialogue(browser, server):
    """Two chat turns: both answers shown, and the second image is drawn from the whole dialogue."""
    from PIL import Image

    url, _ = server
    open_page(browser, url)
    browser.find_element(XPATH, "//button[@role='tab' and normalize-space()='Chat']").click()
    box = wait_for(lambda: [e for e in browser.find_elements(CSS, "#x2i-chat-text textarea")
                            if e.is_displayed()], 30, "the chat box")[0]
    for turn, message in enumerate(("a red circle", "now make it blue"), start=1):
        box.send_keys(message)
        browser.find_element(CSS, "#x2i-chat-send").click()
        images = wait_for(lambda: len(browser.find_elements(CSS, "#x2i-chat-gallery img")) >= turn
                          and browser.find_elements(CSS, "#x2i-chat-gallery img"), RUN_TIMEOUT,
                          f"the image of turn {turn}")
    chat = browser.find_element(CSS, "#x2i-chat").text
    assert "a red circle" in chat and "now make it blue" in chat
    with urllib.request.urlopen(images[-1].get_attribute("src"), timeout=30) as response:
        png = Image.open(io.BytesIO(response.read()))
        png.load()
    assert png.text["x2i:prompt"].startswith("[user] a red circle [assistant] ")  # the dialogue so far
    assert png.text["x2i:prompt"].endswith("[user] now make it blue") and png.text["x2i:answer"]


# -- what the page sends to the models, without a browser (no model loads) ---------------------------------------

def test_page_fields_become_the_cli_adapters_and_request(tmp_path):
    from x2i_cli.ui_runner import Adapters, Options, adapter_values
    from x2i_core import InputError
    from PIL import Image

    lora, init = tmp_path / "style.safetensors", tmp_path / "init.png"
    lora.write_bytes(b"{}")  # only its existence is checked before loading
    Image.new("RGB", (64, 64), "red").save(init)
    choices, fields = adapter_values(Adapters(lora=str(lora), lora_scale=0.7, init_image=str(init), strength=0.5))
    assert [(c.name, c.pretrained, c.scale) for c in choices] == [("lora", str(lora), 0.7)]
    assert fields == {"init_image": str(init), "strength": 0.5}
    with pytest.raises(InputError, match="needs a --controlnet"):
        adapter_values(Adapters(control_image=str(init)))
    with pytest.raises(InputError, match="not found"):
        adapter_values(Adapters(lora=str(tmp_path / "missing.safetensors")))
    with pytest.raises(InputError, match="needs an --ip-adapter"):
        adapter_values(Adapters(ip_image=str(init)))
    choices, _ = adapter_values(Adapters(ip_adapter="XLabs-AI/flux-ip-adapter", ip_image=str(init), ip_scale=0.5))
    assert [(c.name, c.pretrained, c.scale, c.options["image"]) for c in choices] == [
        ("ip-adapter", "XLabs-AI/flux-ip-adapter", 0.5, str(init))]
    assert Options(seed=3, steps=None, width=0, guidance=2.0).call_kwargs() == {
        "seed": 3, "num_images": 1, "negative_prompt": "", "guidance": 2.0}


def test_page_prompt_keeps_uploads_before_text_and_numbers_are_checked():
    needs("gradio")
    from x2i_cli.ui_app import _number, build_prompt
    from x2i_core import InputError

    prompt = build_prompt("as a poster", ["a.png", "b.png"], "clip.mp4", "talk.wav")
    assert [(p.modality, p.value) for p in prompt.parts] == [
        ("image", "a.png"), ("image", "b.png"), ("video", "clip.mp4"), ("audio", "talk.wav"), ("text", "as a poster")]
    assert build_prompt("  ", None, None, None).is_empty()
    assert _number(" ") is None and _number("3.5") == 3.5
    with pytest.raises(InputError, match="guidance must be a number"):
        _number("lots", what="guidance")


def test_without_gradio_the_command_says_how_to_install_it():
    code = "import sys; sys.modules['gradio'] = None; from x2i_cli.main import main; sys.exit(main(['ui']))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "X2I_PLUGINS": "x2i"})
    assert done.returncode == 2 and done.stderr.strip() == "Error: the web UI needs Gradio: pip install 'x2i[ui]'"
