"""The playground (/) and the API docs (/docs) in a real browser: Debian's Chromium driven by
selenium, against gunicorn serving the shipped model.

Chromium and its driver are installed with apt-get when missing (CI starts from a fresh
machine); the tests skip, saying why, only where that is impossible. Set
CHARRNN_SCREENSHOT_DIR=docs to keep the screenshot the README shows (docs/playground.png).
"""
import contextlib
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


READY_S = 180  # a busy two-core machine loads, warms up and probes the shipped model slowly


@contextlib.contextmanager
def gunicorn(log_dir: Path, **env):
    """gunicorn (the production config) with the shipped model on a free port, once /ready answers
    200: its URL. A server that exits or is not ready in READY_S fails here, with its log, rather
    than leaving the browser a refused connection (net::ERR_CONNECTION_REFUSED); one that lost its
    port to another process between free_port() and its bind starts again on another."""
    if not SHIPPED.with_suffix(".safetensors").exists():
        pytest.skip("shipped weights absent")
    for attempt in range(3):
        port = free_port()
        env_ = {**os.environ, "PORT": str(port), "HOST": "127.0.0.1",
                "CHARRNN_WEIGHTS": str(SHIPPED.relative_to(ROOT)), "WEB_CONCURRENCY": "1",
                "CHARRNN_HTTP_THREADS": "16", "CHARRNN_MAX_NEW_CHARS": str(LONG),
                "CHARRNN_TORCH_THREADS": "1",  # speed is not tested here; one thread suffers least when busy
                # each server its own uploads and jobs database, and no trainer: none trains here
                "CHARRNN_DATA_DIR": str(log_dir / f"data-{port}"), "CHARRNN_TRAINER": "off", **env}
        log = log_dir / f"gunicorn-{port}.log"
        with open(log, "wb") as out:
            proc = subprocess.Popen([str(Path(sys.executable).with_name("gunicorn")), "-c", "gunicorn.conf.py"],
                                    cwd=ROOT, env=env_, stdout=out, stderr=subprocess.STDOUT)
        base = f"http://127.0.0.1:{port}"
        try:
            if _ready(proc, base, log, last=attempt == 2):
                yield base
                return
        finally:
            proc.terminate()
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _ready(proc, base: str, log: Path, last: bool) -> bool:
    """Wait for /ready -> True; False when the port was taken (try another); else fail with the log."""
    deadline = time.time() + READY_S
    while proc.poll() is None and time.time() < deadline:
        try:
            urllib.request.urlopen(base + "/ready", timeout=2)
        except OSError:  # refused (not listening yet), or 503 (still loading)
            time.sleep(0.2)
            continue
        if proc.poll() is None:  # ours answered, not another holder of the port
            return True
    text = log.read_text(errors="replace")
    if proc.poll() is not None and "Connection in use" in text and not last:
        return False
    why = f"exited with {proc.returncode}" if proc.poll() is not None else f"not ready in {READY_S} s"
    pytest.fail(f"gunicorn at {base} {why}; its log ends:\n{text[-3000:]}", pytrace=False)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    with gunicorn(tmp_path_factory.mktemp("server")) as base:
        yield base


def post(base, path, body) -> dict:
    req = urllib.request.Request(base + path, json.dumps(body).encode(), {"Content-Type": "application/json"})
    return json.load(urllib.request.urlopen(req, timeout=60))


def get(base, path) -> dict:
    return json.load(urllib.request.urlopen(base + path, timeout=60))


def metric(base, name) -> float:
    """A metric's value, as `name` or `name{label="value",...}`: summed over the series that carry
    those labels (whatever their others, such as the model)."""
    text = urllib.request.urlopen(base + "/metrics", timeout=5).read().decode()
    want_name, _, want = name.partition("{")
    want = set(re.findall(r'(\w+="[^"]*")', want))
    total = 0.0
    for m in re.finditer(rf"^{re.escape(want_name)}(?:{{(.*)}})? (\S+)$", text, re.M):
        if want <= set(re.findall(r'(\w+="[^"]*")', m.group(1) or "")):
            total += float(m.group(2))
    return total


def wait(driver, cond, timeout=60):
    """cond(driver) once truthy; on timeout the failure names the condition's line and the page's state."""
    from selenium.webdriver.support.ui import WebDriverWait
    import inspect
    what = inspect.getsource(cond).strip()
    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.05).until(lambda d: cond(d))
    except Exception as e:
        page = driver.execute_script("return ['status', 'error', 'tr-status', 'tr-error']"
                                     ".map(id => document.getElementById(id)?.textContent)")
        raise AssertionError(f"waited {timeout} s for: {what}; status/error/tr-status/tr-error: {page}") from e


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
    assert by_id(browser, "card").text.startswith("shakespeare · 2×512 LSTM")
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


def test_the_page_asks_for_the_api_key_a_server_requires(browser, tmp_path):
    with gunicorn(tmp_path, CHARRNN_API_KEY="s3cret-key") as base:
        browser.get(base + "/")
        err = by_id(browser, "error")
        wait(browser, lambda d: err.is_displayed() and "needs an API key" in err.text)
        assert by_id(browser, "key-box").get_attribute("open") is not None
        assert "Model list unavailable" in by_id(browser, "card").text  # /v1/models wants the key too
        box = by_id(browser, "api-key")
        box.send_keys("s3cret-key\t")  # typed, then left: the page retries with it
        wait(browser, lambda d: "LSTM" in by_id(d, "card").text and first_bar(d) is not None)
        assert picker(browser) == [("shakespeare", True)]  # the model list came with the key
        by_id(browser, "in-run").click()  # every call carries the key, /inspect too
        wait(browser, lambda d: len(d.find_elements("css selector", "#heat span")) > 0)
        browser.execute_script("sessionStorage.clear()")


# ---- several models: the picker ---------------------------------------------------------------
GREEK = "αβγδεζηθικλμνξοπρσςτυφχψω \n"  # no letter in common with the shipped model


def picker(driver) -> list[tuple[str, bool]]:
    """The model picker's options: (id, selected), read at once (the page may be rebuilding them)."""
    return [tuple(o) for o in driver.execute_script(
        "return [...document.querySelectorAll('#model option')].map(o => [o.value, o.selected])")]


def option_text(driver, model_id) -> str:
    return driver.execute_script("return [...document.querySelectorAll('#model option')]"
                                 ".find(o => o.value === arguments[0])?.text", model_id)


@pytest.fixture(scope="module")
def models_dir(tmp_path_factory) -> Path:
    """A models directory: a copy of the shipped model, and a small random LSTM over Greek letters."""
    import torch
    from model import CharRNN, ModelConfig, Vocab
    from model.checkpoint import save_weights

    if not SHIPPED.with_suffix(".safetensors").exists():
        pytest.skip("shipped weights absent")
    folder = tmp_path_factory.mktemp("models")
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(SHIPPED.with_suffix(suffix), folder / f"shakespeare{suffix}")
    torch.manual_seed(0)
    vocab = Vocab(sorted(GREEK))  # sorted, as training writes it (Vocab.encode relies on that)
    shipped = json.loads(SHIPPED.with_suffix(".json").read_text(encoding="utf-8"))["vocab"]
    assert set(GREEK) & set(shipped) == {" ", "\n"}
    model = CharRNN(ModelConfig(len(vocab), embed=8, hidden=16, layers=1, dropout=0.0, cell="lstm")).eval()
    save_weights(model, vocab, folder / "greek", {"training": {"best_val_loss": 3.25, "best_val_bpc": 4.69}})
    return folder


@pytest.fixture(scope="module")
def multi_server(models_dir, tmp_path_factory):
    with gunicorn(tmp_path_factory.mktemp("multi"), CHARRNN_WEIGHTS=str(models_dir / "shakespeare"),
                  CHARRNN_MODELS_DIR=str(models_dir)) as base:
        yield base


def test_the_model_picker_switches_the_chart_generation_and_inside_view(multi_server, models_dir, browser):
    from selenium.webdriver.support.ui import Select

    base = multi_server
    open_page(browser, base)
    wait(browser, lambda d: len(picker(d)) == 2)
    assert picker(browser) == [("greek", False), ("shakespeare", True)]  # the default model preselected
    label = browser.find_element("css selector", 'label[for="model"]')
    assert label.text == "Model"
    assert option_text(browser, "shakespeare") == ("shakespeare (default) — LSTM 2×512, validation loss 1.400 "
                                                   "(stateful)")
    assert option_text(browser, "greek") == "greek — LSTM 1×16, validation loss 3.250 (training), not loaded"

    # the Greek model: its card, its vocabulary, its next characters
    Select(by_id(browser, "model")).select_by_value("greek")
    wait(browser, lambda d: by_id(d, "card").text.startswith("greek · 1×16 LSTM"))
    card = by_id(browser, "card").text
    assert "27 characters" in card and "validation loss 3.2500 nats/char (training)" in card
    assert browser.current_url.endswith("/?model=greek")
    err = by_id(browser, "error")
    text = "καλη μερα κοσμε"
    type_prompt(browser, text)
    wait(browser, lambda d: by_id(d, "next-status").text == f"after {len(text)} character(s)")
    assert not err.is_displayed()
    shown = [li.get_attribute("data-char") for li in browser.find_elements("css selector", "#bars li")]
    want = post(base, "/predict-next", {"model": "greek", "text": text, "top_k": 10})
    assert want["model"] == "greek" and shown == [p["char"] for p in want["predictions"]]
    assert len(shown) == 10 and set(shown) <= set(GREEK)
    vocab = browser.execute_script("return document.getElementById('vocab').textContent")
    assert vocab.split(" ") == [{" ": "␣", "\n": "⏎"}.get(c, c) for c in sorted(GREEK)]
    wait(browser, lambda d: "not loaded" not in (option_text(d, "greek") or "not loaded"))  # used, so loaded

    # generation: made of the Greek model's characters, and the API's text for the same settings
    for field, value in [("max_new_chars", "60"), ("seed", "3")]:
        by_id(browser, field).clear()
        by_id(browser, field).send_keys(value)
    by_id(browser, "generate").click()
    wait(browser, lambda d: by_id(d, "status").text.startswith("done:"))
    out = browser.execute_script("return document.getElementById('out-text').textContent")
    api = post(base, "/generate", {"model": "greek", "prompt": text, "max_new_chars": 60, "seed": 3,
                                   "temperature": 0.8, "logprobs": 3})
    assert api["model"] == "greek" and out == api["completions"][0]["text"]
    assert len(out) == 60 and set(out) <= set(GREEK)

    # the Inside view: the small model's one layer and 16 units
    layers = [o.get_attribute("value") for o in browser.find_elements("css selector", "#in-layer option")]
    assert layers == ["0"] and by_id(browser, "in-unit").get_attribute("max") == "15"
    by_id(browser, "in-run").click()
    wait(browser, lambda d: len(d.find_elements("css selector", "#in-top button")) == 10)
    want = post(base, "/inspect", {"model": "greek", "text": text + out, "units": [0], "top_units": 10})
    assert want["hidden"] == 16 and want["layer"] == 0 and len(want["chars"]) == len(text + out)
    assert [float(v) for v, _ in heat(browser)] == pytest.approx([c["c"][0] for c in want["chars"]], abs=1e-5)
    assert by_id(browser, "in-status").text.startswith(f"layer 0, c[0] over {len(text + out)} characters")
    top = browser.find_elements("css selector", "#in-top button")
    assert [int(b.get_attribute("data-unit")) for b in top] == [t["unit"] for t in want["top_units"]]

    # a reload keeps the choice (?model=greek)
    browser.refresh()
    wait(browser, lambda d: by_id(d, "card").text.startswith("greek ·") and ("greek", True) in picker(d))
    err = by_id(browser, "error")

    # a model added meanwhile shows up when the picker gets focus; one removed answers 404, in words
    for suffix in (".json", ".safetensors"):  # the weights last, and whole: the pair appears at once
        shutil.copyfile(models_dir / f"greek{suffix}", models_dir / f"greek2{suffix}.part")
        os.replace(models_dir / f"greek2{suffix}.part", models_dir / f"greek2{suffix}")
    try:
        browser.execute_script("arguments[0].focus()", by_id(browser, "model"))
        wait(browser, lambda d: [m for m, _ in picker(d)] == ["greek", "greek2", "shakespeare"])
        Select(by_id(browser, "model")).select_by_value("greek2")
        wait(browser, lambda d: by_id(d, "card").text.startswith("greek2 ·"))
    finally:
        for suffix in (".safetensors", ".json"):
            (models_dir / f"greek2{suffix}").unlink()
    type_prompt(browser, "αβγ")
    wait(browser, lambda d: err.is_displayed() and "model_not_found" in err.text)
    assert "model_not_found" in err.text and "HTTP 404" in err.text and "greek, shakespeare" in err.text
    wait(browser, lambda d: "not on this server" in (option_text(d, "greek2") or ""))

    # back to the shipped model, with the keyboard: it answers again
    sel = by_id(browser, "model")
    sel.send_keys("s")  # type-ahead on the focused picker: shakespeare
    wait(browser, lambda d: by_id(d, "card").text.startswith("shakespeare · 2×512 LSTM"))
    assert browser.current_url.endswith("/?model=shakespeare")
    text = "ROMEO:\nWhat light through yonder windo"
    type_prompt(browser, text)
    wait(browser, lambda d: by_id(d, "next-status").text == f"after {len(text)} character(s)")
    assert first_bar(browser).get_attribute("data-char") == "w" and not err.is_displayed()
    layers = [o.get_attribute("value") for o in browser.find_elements("css selector", "#in-layer option")]
    assert layers == ["0", "1"] and by_id(browser, "in-unit").get_attribute("max") == "511"
    assert {m["id"] for m in get(base, "/v1/models")["data"]} == {"greek", "shakespeare"}


# ---- the Train view: upload a text, fine-tune, follow it live, cancel ------------------------------
SENTENCE = "the quick brown fox jumps over the lazy dog, and the dog sleeps on.\n"
FOX = SENTENCE * 50  # 3,400 characters: a validation split and a batch, in `small`'s vocabulary


@pytest.fixture(scope="module")
def train_dir(tmp_path_factory) -> Path:
    """models/: a copy of the shipped model and `small`, a 1-layer hidden-32 LSTM over FOX's characters
    (40 steps of fine-tuning take seconds on a busy machine); beside it the texts the tests upload."""
    import torch
    from model import CharRNN, ModelConfig, Vocab
    from model.checkpoint import save_weights

    if not SHIPPED.with_suffix(".safetensors").exists():
        pytest.skip("shipped weights absent")
    folder = tmp_path_factory.mktemp("train")
    models = folder / "models"
    models.mkdir()
    for suffix in (".safetensors", ".json"):
        shutil.copyfile(SHIPPED.with_suffix(suffix), models / f"shakespeare{suffix}")
    torch.manual_seed(0)
    vocab = Vocab(sorted(set(FOX)))
    model = CharRNN(ModelConfig(len(vocab), embed=16, hidden=32, layers=1, dropout=0.0, cell="lstm")).eval()
    save_weights(model, vocab, models / "small", {"training": {"best_val_loss": 3.0, "best_val_bpc": 4.33}})
    (folder / "fox.txt").write_text(FOX, encoding="utf-8")
    (folder / "latin1.txt").write_bytes("Café crème, s'il vous plaît.\n".encode("latin-1") * 100)  # é: 0xe9
    (folder / "short.txt").write_text(SENTENCE, encoding="utf-8")
    return folder


@pytest.fixture(scope="module")
def train_server(train_dir, tmp_path_factory):
    """gunicorn with its trainer (jobs/runner.py, one thread), serving train_dir/models."""
    models = train_dir / "models"
    with gunicorn(tmp_path_factory.mktemp("train-server"), CHARRNN_WEIGHTS=str(models / "shakespeare"),
                  CHARRNN_MODELS_DIR=str(models), CHARRNN_TRAINER="local", CHARRNN_TRAIN_THREADS="1") as base:
        yield base


def open_train(driver, base):
    """The page, scrolled to its Train view by the header's link, with the base models listed."""
    open_page(driver, base)
    driver.find_element("link text", "Train a model").click()
    wait(driver, lambda d: d.find_elements("css selector", '#tr-base option[value="small"]'))
    assert driver.current_url.endswith("/#train")


def choose_file(driver, path: Path):
    box = by_id(driver, "tr-file")
    box.clear()
    box.send_keys(str(path))  # what a user's file chooser does


def train_status(driver) -> str:
    return by_id(driver, "tr-status").text


def chart_points(driver) -> int:
    return int(by_id(driver, "tr-chart").get_attribute("data-points") or 0)


def test_train_view_shows_the_servers_words_for_a_file_it_refuses(train_server, train_dir, browser):
    from selenium.webdriver.support.ui import Select

    open_train(browser, train_server)
    base = Select(by_id(browser, "tr-base"))
    assert [o.get_attribute("value") for o in base.options] == ["shakespeare", "small", "scratch"]
    assert base.first_selected_option.get_attribute("value") == "shakespeare"  # the model the page shows
    assert not by_id(browser, "tr-hidden").is_displayed()  # a fine-tune keeps its base's shape
    base.select_by_value("scratch")
    assert by_id(browser, "tr-hidden").is_displayed() and by_id(browser, "tr-layers").is_displayed()
    base.select_by_value("small")
    assert not by_id(browser, "tr-layers").is_displayed()
    for label in ("base model", "hidden units", "layers", "length", "suffix"):  # every field is labelled
        assert browser.find_elements("xpath", f'//section[@id="train"]//label[contains(., "{label}")]'), label

    err = by_id(browser, "tr-error")
    choose_file(browser, train_dir / "latin1.txt")
    by_id(browser, "tr-start").click()
    wait(browser, lambda d: err.is_displayed())
    assert err.get_attribute("role") == "alert"
    assert err.text == ("latin1.txt was refused: the file is not UTF-8 text: invalid byte 0xe9 at byte offset 3 "
                        "(HTTP 400, invalid_utf8)")
    choose_file(browser, train_dir / "short.txt")
    wait(browser, lambda d: not err.is_displayed())  # another file: the old message goes
    by_id(browser, "tr-start").click()
    wait(browser, lambda d: err.is_displayed())
    assert "the file has 68 characters; at least 2000 are needed" in err.text and "file_too_small" in err.text
    assert get(train_server, "/v1/fine_tuning/jobs")["data"] == []  # nothing was queued
    assert by_id(browser, "tr-start").get_attribute("disabled") is None


def test_train_view_fine_tunes_live_and_the_new_model_joins_the_picker(train_server, train_dir, browser, tmp_path):
    from selenium.webdriver.support.ui import Select

    base = train_server
    open_train(browser, base)
    choose_file(browser, train_dir / "fox.txt")
    Select(by_id(browser, "tr-base")).select_by_value("small")
    assert Select(by_id(browser, "tr-unit")).first_selected_option.text == "steps"
    by_id(browser, "tr-length").clear()
    by_id(browser, "tr-length").send_keys("40")
    by_id(browser, "tr-suffix").send_keys("web")
    by_id(browser, "tr-start").click()
    wait(browser, lambda d: train_status(d).startswith("ftjob-"), timeout=60)
    job_id = train_status(browser).split(":")[0]
    job = get(base, f"/v1/fine_tuning/jobs/{job_id}")
    assert (job["model"], job["suffix"], job["total_steps"]) == ("small", "web", 40)
    assert job["hyperparameters"]["n_steps"] == 40 and get(base, "/v1/files")["data"][0]["filename"] == "fox.txt"

    # the loss curves and the samples arrive as the trainer evaluates, then the job succeeds
    wait(browser, lambda d: chart_points(d) >= 2 and d.find_elements("css selector", "#tr-samples li"), timeout=180)
    wait(browser, lambda d: "succeeded" in train_status(d), timeout=180)
    assert "step 40/40" in train_status(browser)
    assert not by_id(browser, "tr-cancel").is_displayed() and not by_id(browser, "tr-error").is_displayed()
    events = get(base, f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000")["data"][::-1]  # oldest first
    metrics = [e["data"] for e in events if e["type"] == "metrics"]
    samples = [e["data"] for e in events if e["data"] and "sample" in e["data"]]
    assert metrics[-1]["step"] == 40 and len(samples) >= 2
    wait(browser, lambda d: chart_points(d) == len(metrics))  # one point per evaluation
    for cls in ("train", "valid"):  # each curve through every evaluation, steps left to right
        xs = browser.execute_script(
            "return [...document.querySelectorAll('#tr-chart circle.' + arguments[0])].map(c => +c.getAttribute('cx'))",
            cls)
        assert len(xs) == len(metrics) and xs == sorted(xs) and len(set(xs)) == len(xs)
        assert browser.find_elements("css selector", f"#tr-chart polyline.{cls}")
    assert f"at step 40: training loss {metrics[-1]['train_loss']:.3f}" in browser.execute_script(
        "return document.getElementById('tr-chart-desc').textContent")
    shown = browser.execute_script("return [...document.querySelectorAll('#tr-samples li')]"
                                   ".map(li => [+li.dataset.step, li.querySelector('pre').textContent])")
    assert shown == [[s["step"], s["sample"]] for s in samples[::-1][:5]]  # the latest, newest first
    assert browser.find_element("css selector", "#tr-samples li .step").text == f"step {samples[-1]['step']}"

    # the new model: in the picker, and a button that chooses it
    name = get(base, f"/v1/fine_tuning/jobs/{job_id}")["fine_tuned_model"]
    assert name.startswith("ft-small-web-")
    done = by_id(browser, "tr-done")
    wait(browser, lambda d: done.is_displayed() and name in done.text)
    assert (name, False) in picker(browser)
    assert name in by_id(browser, "tr-jobs").text and "succeeded" in by_id(browser, "tr-jobs").text
    browser.execute_script("arguments[0].scrollIntoView()", by_id(browser, "tr-job"))
    screenshot(browser, tmp_path, "train.png", by_id(browser, "tr-job"))  # the chart and the samples
    by_id(browser, "tr-use").click()
    wait(browser, lambda d: by_id(d, "card").text.startswith(f"{name} · 1×32 LSTM"))
    assert (name, True) in picker(browser) and browser.current_url.endswith(f"/?model={name}")

    # and it writes
    text = "the quick brown "
    type_prompt(browser, text)
    wait(browser, lambda d: by_id(d, "next-status").text == f"after {len(text)} character(s)")
    for field, value in [("max_new_chars", "50"), ("seed", "5")]:
        by_id(browser, field).clear()
        by_id(browser, field).send_keys(value)
    by_id(browser, "generate").click()
    wait(browser, lambda d: by_id(d, "status").text.startswith("done:"))
    out = browser.execute_script("return document.getElementById('out-text').textContent")
    api = post(base, "/generate", {"model": name, "prompt": text, "max_new_chars": 50, "seed": 5,
                                   "temperature": 0.8, "logprobs": 3})
    assert api["model"] == name and out == api["completions"][0]["text"]
    assert len(out) == 50 and set(out) <= set(FOX)
    card = next(m for m in get(base, "/v1/models")["data"] if m["id"] == name)
    assert card["fine_tune"]["job"] == job_id and card["fine_tune"]["base"] == "small"


def test_train_view_cancels_a_running_job(train_server, train_dir, browser):
    from selenium.webdriver.support.ui import Select

    base = train_server
    open_train(browser, base)
    models_before = {m["id"] for m in get(base, "/v1/models")["data"]}
    choose_file(browser, train_dir / "fox.txt")
    Select(by_id(browser, "tr-base")).select_by_value("small")
    Select(by_id(browser, "tr-unit")).select_by_value("minutes")
    by_id(browser, "tr-length").clear()
    by_id(browser, "tr-length").send_keys("5")
    by_id(browser, "tr-start").click()
    wait(browser, lambda d: train_status(d).startswith("ftjob-"), timeout=60)
    job_id = train_status(browser).split(":")[0]
    assert get(base, f"/v1/fine_tuning/jobs/{job_id}")["hyperparameters"]["minutes"] == 5
    cancel = by_id(browser, "tr-cancel")
    assert cancel.is_displayed()
    wait(browser, lambda d: chart_points(d) >= 1, timeout=180)  # the trainer is at work
    status = train_status(browser)
    assert status.startswith(f"{job_id}: running · step ") and " left" in status
    t0 = time.time()
    cancel.click()
    wait(browser, lambda d: "cancelled" in train_status(d), timeout=10)
    assert time.time() - t0 < 10
    assert get(base, f"/v1/fine_tuning/jobs/{job_id}")["status"] == "cancelled"
    wait(browser, lambda d: not cancel.is_displayed())
    assert browser.switch_to.active_element == by_id(browser, "tr-start")  # the focus stays in the form
    assert not by_id(browser, "tr-error").is_displayed()
    # the trainer stops at its next step; no model is published
    deadline = time.time() + 60
    while time.time() < deadline:
        messages = [e["message"] for e in get(base, f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000")["data"]]
        if any(m.startswith("The trainer stopped at step") for m in messages):
            break
        time.sleep(0.5)
    else:
        pytest.fail(f"the trainer did not stop: {messages}")
    assert {m["id"] for m in get(base, "/v1/models")["data"]} == models_before
    assert "cancelled" in train_status(browser)

    # the recent jobs: the newest first; one opens again, its curves drawn from its events
    listed = wait(browser, lambda d: d.find_elements("css selector", "#tr-jobs button"))
    assert listed[0].get_attribute("data-job") == job_id and "cancelled" in listed[0].text
    assert listed[0].get_attribute("aria-current") == "true"
    metrics = [e for e in get(base, f"/v1/fine_tuning/jobs/{job_id}/events?limit=1000")["data"] if e["type"] == "metrics"]
    browser.refresh()  # a new page: no job shown until one is chosen
    wait(browser, lambda d: d.find_elements("css selector", f'#tr-jobs button[data-job="{job_id}"]'))
    assert not by_id(browser, "tr-job").is_displayed()
    browser.find_element("css selector", f'#tr-jobs button[data-job="{job_id}"]').click()
    wait(browser, lambda d: train_status(d).startswith(f"{job_id}: cancelled") and chart_points(d) == len(metrics))
    assert not by_id(browser, "tr-cancel").is_displayed()
