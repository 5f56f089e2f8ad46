"""The playground (/) and the API docs (/docs) in a real browser: Debian's Chromium driven by
selenium, against gunicorn serving the shipped model.

Chromium and its driver are installed with apt-get when missing (CI starts from a fresh
machine); the tests skip, saying why, only where that is impossible. Set
CHARRNN_SCREENSHOT_DIR=docs to keep the screenshot the README shows (docs/playground.png).
"""
import json
import math
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import ROOT, SHIPPED
from test_gunicorn import free_port

CHROMIUM, DRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--window-size=1280,1150"]
LONG = 50_000  # max_new_chars of the generation the Stop button cuts short (~a minute of decoding)


def install_chromium() -> str | None:
    """Chromium + chromedriver from Debian when missing; None when ready, else why not."""
    if CHROMIUM.exists() and DRIVER.exists():
        return None
    if shutil.which("apt-get") is None:
        return "not installed, and there is no apt-get to install them with"
    if os.geteuid() != 0:
        return "not installed, and installing them with apt-get needs root"
    cmd = "apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium chromium-driver"
    r = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=1200)
    if r.returncode or not (CHROMIUM.exists() and DRIVER.exists()):
        return f"`{cmd}` failed: {(r.stdout + r.stderr)[-500:]}"
    return None


@pytest.fixture(scope="module")
def browser(tmp_path_factory):
    why = install_chromium()
    if why:
        pytest.skip(f"Chromium and chromedriver unavailable: {why}")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = str(CHROMIUM)
    for flag in FLAGS + [f"--user-data-dir={tmp_path_factory.mktemp('chromium-profile')}"]:
        opts.add_argument(flag)
    driver = webdriver.Chrome(service=Service(str(DRIVER)), options=opts)  # a driver path: no Selenium Manager
    driver.set_page_load_timeout(30)
    yield driver
    driver.quit()


def gunicorn(**env):
    """gunicorn (the production config) with the shipped model on a free port; yields its URL."""
    if not SHIPPED.with_suffix(".safetensors").exists():
        pytest.skip("shipped weights absent")
    port = free_port()
    env = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1", "CHARRNN_WEIGHTS": str(SHIPPED.relative_to(ROOT)),
           "WEB_CONCURRENCY": "1", "CHARRNN_HTTP_THREADS": "16", "CHARRNN_MAX_NEW_CHARS": str(LONG),
           "CHARRNN_TORCH_THREADS": "1", **env}  # speed is not tested here; one thread suffers least on a busy machine
    proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py"], cwd=ROOT,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    base = f"http://127.0.0.1:{port}"
    deadline = time.time() + 60
    while time.time() < deadline and proc.poll() is None:
        try:
            urllib.request.urlopen(base + "/ready", timeout=1)
            break
        except OSError:
            time.sleep(0.2)
    try:
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()


@pytest.fixture(scope="module")
def server():
    yield from gunicorn()


def post(base, path, body) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))


def metric(base, name) -> float:
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    m = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    return float(m.group(1)) if m else 0.0


def wait(driver, cond, timeout=60):
    """cond(driver) once truthy; on timeout the failure names the condition's line and the page's state."""
    from selenium.webdriver.support.ui import WebDriverWait
    import inspect
    what = inspect.getsource(cond).strip()
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: cond(d))
    except Exception as e:
        page = driver.execute_script("return [document.getElementById('status')?.textContent, "
                                     "document.getElementById('error')?.textContent]")
        raise AssertionError(f"waited {timeout} s for: {what}; status/error: {page}") from e


def by_id(driver, id_):
    return driver.find_element("id", id_)


def first_bar(driver):
    bars = driver.find_elements("css selector", "#bars li")
    return bars[0] if bars else None


def type_prompt(driver, text):
    box = by_id(driver, "prompt")
    box.clear()
    box.send_keys(text)


def open_page(driver, base):
    driver.get(base + "/")
    wait(driver, lambda d: "LSTM" in by_id(d, "card").text and first_bar(d) is not None)


def screenshot(driver, tmp_path, name, element=None) -> Path:
    """The window (or one element of it) as PNG, into CHARRNN_SCREENSHOT_DIR when set."""
    folder = Path(os.environ.get("CHARRNN_SCREENSHOT_DIR") or tmp_path)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert (element or driver).screenshot(str(path)) if element else driver.save_screenshot(str(path))
    return path


def test_the_bar_chart_follows_the_text_as_you_type(server, browser):
    open_page(browser, server)
    assert "weights/shakespeare" in by_id(browser, "card").text
    before = metric(server, 'charrnn_requests_total{endpoint="/predict-next",status="200"}')
    text = "ROMEO:\nWhat light through yonder windo"
    type_prompt(browser, text)
    expected = post(server, "/predict-next", {"text": text, "top_k": 1})["predictions"][0]["char"]
    assert expected == "w"  # the shipped model knows its Shakespeare
    wait(browser, lambda d: by_id(d, "next-status").text == f"after {len(text)} character(s)")
    bar = first_bar(browser)
    assert bar.get_attribute("data-char") == "w" and bar.find_element("class name", "char").text == "w"
    assert len(browser.find_elements("css selector", "#bars li")) == 10
    # one keystroke, one request would be 37 + 1; debouncing sends a handful
    sent = metric(server, 'charrnn_requests_total{endpoint="/predict-next",status="200"}') - before - 1
    assert 1 <= sent <= 5, sent

    # a newline is drawn as a visible symbol
    type_prompt(browser, "ROMEO:")
    wait(browser, lambda d: d.find_element("id", "next-status").text == "after 6 character(s)")
    bar = first_bar(browser)
    assert bar.get_attribute("data-char") == "\n" and bar.find_element("class name", "char").text == "⏎"
    bar.find_element("tag name", "button").click()  # clicking a bar appends its character
    assert by_id(browser, "prompt").get_attribute("value") == "ROMEO:\n"


def test_generate_streams_and_stop_frees_the_engine_slot(server, browser, tmp_path):
    open_page(browser, server)
    type_prompt(browser, "JULIET:\n")
    mnc = by_id(browser, "max_new_chars")
    mnc.clear()
    mnc.send_keys(str(LONG))
    generated_before = metric(server, "charrnn_generated_chars_total")
    by_id(browser, "generate").click()
    out = by_id(browser, "out-text")
    wait(browser, lambda d: len(out.text) > 0)
    first = len(out.text)
    wait(browser, lambda d: len(out.text) > first)  # it grows while we watch
    try:  # a few lines for the screenshot, if the machine is quick enough
        wait(browser, lambda d: len(out.text) >= 300, timeout=15)
    except AssertionError:
        pass
    assert metric(server, "charrnn_active_sequences") == 1
    assert by_id(browser, "generate").get_attribute("disabled") == "true"
    by_id(browser, "stop-btn").click()
    wait(browser, lambda d: by_id(d, "status").text.startswith("stopped after"))
    deadline = time.time() + 10
    while metric(server, "charrnn_active_sequences") and time.time() < deadline:
        time.sleep(0.05)
    assert metric(server, "charrnn_active_sequences") == 0  # the engine freed the slot
    shown, generated = len(out.text), metric(server, "charrnn_generated_chars_total")
    assert generated - generated_before < LONG  # cut short (how far it got depends on the machine's speed)
    time.sleep(0.3)
    assert len(out.text) == shown  # nothing arrives after Stop
    assert metric(server, "charrnn_generated_chars_total") == generated  # and the engine generates no more
    assert by_id(browser, "generate").get_attribute("disabled") is None
    path = screenshot(browser, tmp_path, "playground.png")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_ctrl_enter_generates_the_same_text_as_the_api(server, browser):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    open_page(browser, server)
    type_prompt(browser, "KING RICHARD III:\n")
    for field, value in [("max_new_chars", "80"), ("seed", "7"), ("temperature", "0.7"), ("top_p", "0.9")]:
        by_id(browser, field).clear()
        by_id(browser, field).send_keys(value)
    by_id(browser, "stop").send_keys(r"\n\n")
    by_id(browser, "prompt").click()
    ActionChains(browser).key_down(Keys.CONTROL).send_keys(Keys.ENTER).key_up(Keys.CONTROL).perform()
    wait(browser, lambda d: by_id(d, "status").text.startswith("done:"))
    api = post(server, "/generate", {"prompt": "KING RICHARD III:\n", "max_new_chars": 80, "seed": 7,
                                     "temperature": 0.7, "top_p": 0.9, "stop": ["\n\n"], "logprobs": 3})
    api = api["completions"][0]
    shown = browser.execute_script("return document.getElementById('out-text').textContent")
    assert shown == api["text"]  # the streamed pieces add up to exactly the API's answer
    # each character shaded by its probability under the model, as /generate's logprobs give it
    probs = browser.execute_script("return [...document.querySelectorAll('#out-text .tok')].map(s => +s.dataset.p)")
    assert probs == pytest.approx([math.exp(c["logprob"]) for c in api["logprobs"]], abs=1e-4)
    assert "seed 7" in by_id(browser, "status").text
    assert by_id(browser, "prompt").get_attribute("value") == "KING RICHARD III:\n"  # Enter typed nothing


def test_api_errors_are_shown_in_words(server, browser):
    open_page(browser, server)
    type_prompt(browser, "Café ☕ time")
    err = by_id(browser, "error")
    wait(browser, lambda d: err.is_displayed())
    assert "“é”" in err.text and "“☕”" in err.text and "unknown_characters" in err.text
    type_prompt(browser, "ROMEO:")
    wait(browser, lambda d: not err.is_displayed())  # fixed text, message gone
    by_id(browser, "temperature").clear()
    by_id(browser, "temperature").send_keys("-1")
    by_id(browser, "generate").click()
    wait(browser, lambda d: err.is_displayed())
    assert "temperature: Input should be greater than or equal to 0" in err.text


def test_docs_is_swagger_ui_and_try_it_out_calls_this_server(server, browser):
    from selenium.webdriver.common.by import By

    browser.get(server + "/docs")
    wait(browser, lambda d: len(d.find_elements(By.CSS_SELECTOR, ".opblock")) >= 6)
    paths = {e.text for e in browser.find_elements(By.CSS_SELECTOR, ".opblock-summary-path")}
    assert {"/generate", "/predict-next", "/info", "/metrics"} <= {p.replace("\u200b", "") for p in paths}
    op = browser.find_element(By.ID, "operations-default-post_generate")
    op.find_element(By.CSS_SELECTOR, ".opblock-summary").click()
    wait(browser, lambda d: op.find_elements(By.CSS_SELECTOR, ".try-out__btn"))
    op.find_element(By.CSS_SELECTOR, ".try-out__btn").click()
    body = wait(browser, lambda d: op.find_element(By.CSS_SELECTOR, "textarea.body-param__text"))
    body.clear()
    body.send_keys('{"prompt": "ROMEO:", "max_new_chars": 20, "seed": 1}')
    op.find_element(By.CSS_SELECTOR, ".execute").click()
    live = wait(browser, lambda d: op.find_element(By.CSS_SELECTOR, ".live-responses-table tr.response .response-col_status"))
    assert live.text.strip() == "200"
    answer = op.find_element(By.CSS_SELECTOR, ".live-responses-table .microlight").text
    expected = post(server, "/generate", {"prompt": "ROMEO:", "max_new_chars": 20, "seed": 1})
    assert json.loads(answer) == expected


def heat(driver) -> list[tuple[str, str]]:
    return driver.execute_script("return [...document.querySelectorAll('#heat span')]"
                                 ".map(s => [s.dataset.value, s.style.backgroundColor])")


def test_inside_view_colours_the_text_by_a_unit_and_changes_with_it(server, browser, tmp_path):
    open_page(browser, server)
    text = "ROMEO:\nWhat light through yonder window breaks?\nIt is the east, and Juliet is the sun.\n"
    type_prompt(browser, text)
    by_id(browser, "in-run").click()
    wait(browser, lambda d: len(d.find_elements("css selector", "#in-top button")) == 10)
    api = post(server, "/inspect", {"text": text, "units": [0], "top_units": 10})
    spans = heat(browser)
    assert len(spans) == len(api["chars"]) and len({bg for _, bg in spans}) > 5  # a heatmap, not one colour
    assert [float(v) for v, _ in spans] == pytest.approx([c["c"][0] for c in api["chars"]], abs=1e-5)
    assert "c[0]" in by_id(browser, "in-status").text

    second = browser.find_elements("css selector", "#in-top button")[1]
    unit = int(second.get_attribute("data-unit"))
    assert unit == api["top_units"][1]["unit"]
    second.click()  # pick another unit: the colours follow it
    wait(browser, lambda d: f"c[{unit}]" in by_id(d, "in-status").text)
    spans2 = heat(browser)
    want = post(server, "/inspect", {"text": text, "units": [unit], "top_units": 10})["chars"]
    assert [float(v) for v, _ in spans2] == pytest.approx([c["c"][0] for c in want], abs=1e-5)
    assert [bg for _, bg in spans2] != [bg for _, bg in spans]
    browser.execute_script("window.scrollTo(0, document.body.scrollHeight)")
    screenshot(browser, tmp_path, "inside.png", by_id(browser, "inside"))

    from selenium.webdriver.support.ui import Select
    Select(by_id(browser, "in-what")).select_by_value("surprise")  # colour by surprise: no new request
    wait(browser, lambda d: "surprise" in by_id(d, "in-status").text)
    assert [float(v) for v, _ in heat(browser)] == pytest.approx([-c["logprob"] for c in want], abs=1e-5)


def test_the_page_asks_for_the_api_key_a_server_requires(browser):
    for base in gunicorn(CHARRNN_API_KEY="s3cret-key"):
        browser.get(base + "/")
        err = by_id(browser, "error")
        wait(browser, lambda d: err.is_displayed() and "needs an API key" in err.text)
        assert by_id(browser, "key-box").get_attribute("open") is not None
        box = by_id(browser, "api-key")
        box.send_keys("s3cret-key\t")  # typed, then left: the page retries with it
        wait(browser, lambda d: "LSTM" in by_id(d, "card").text and first_bar(d) is not None)
        by_id(browser, "in-run").click()  # every call carries the key, /inspect too
        wait(browser, lambda d: len(d.find_elements("css selector", "#heat span")) > 0)
        browser.execute_script("sessionStorage.clear()")
