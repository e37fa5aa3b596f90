"""The web page at `/`, driven in headless Chromium against a real `qwen-audio serve --model lite`.

Upload a clip, ask for a transcript (streamed), ask a follow-up that grounds a word, and check that the
span is cut in the browser into a playable, downloadable WAV of the right length; an API error (missing
key) is shown readably and the question works once the key is entered; a recording (Chromium's fake
microphone) becomes a clip. Needs Debian's chromium and chromium-driver and Python's selenium.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from .conftest import AUDIO, need_shared

CHROMIUM = os.environ.get("QWEN_AUDIO_CHROMIUM", "/usr/bin/chromium")
CHROMEDRIVER = os.environ.get("QWEN_AUDIO_CHROMEDRIVER", "/usr/bin/chromedriver")
CLIP = AUDIO / "1272-128104-0000.flac"
GLASS = AUDIO / "glass-breaking-151256.mp3"  # glass breaks in its first two seconds
WAIT_S = 60  # the longest any one step may take (the first answer loads Whisper)


def _need_browser() -> None:
    for path, package in ((CHROMIUM, "chromium"), (CHROMEDRIVER, "chromium-driver")):
        if not (Path(path).is_file() or shutil.which(path)):
            pytest.skip(f"{path} not found: install Debian's {package} (apt-get install {package})")
    pytest.importorskip("selenium", reason="selenium is not installed: pip install selenium")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Served:
    """A `qwen-audio serve` subprocess, logging to a file."""

    def __init__(self, log: Path, *extra: str, model: str = "lite"):
        self.port, self.log = _free_port(), log
        self.url = f"http://127.0.0.1:{self.port}"
        exe = Path(sys.executable).parent / "qwen-audio"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "qwen_audio.cli"]
        self.out = log.open("wb")
        self.proc = subprocess.Popen([*cmd, "serve", "--model", model, "--port", str(self.port), *extra],
                                     stdout=self.out, stderr=subprocess.STDOUT)

    def wait(self) -> "Served":
        deadline = time.monotonic() + WAIT_S
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                self.stop()
                pytest.fail(f"the server exited ({self.proc.returncode}):\n{self.log.read_text(errors='replace')}")
            try:
                with urllib.request.urlopen(self.url + "/health", timeout=2) as r:
                    if json.load(r)["status"] == "ok":
                        return self
            except OSError:
                time.sleep(0.2)
        self.stop()
        pytest.fail(f"the server did not answer /health in {WAIT_S} s:\n{self.log.read_text(errors='replace')}")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.out.close()


@pytest.fixture(scope="module")
def servers(tmp_path_factory):
    """(open server, server with --api-key secret), started together."""
    need_shared()
    _need_browser()
    logs = tmp_path_factory.mktemp("serve")
    started = [Served(logs / "serve.log"), Served(logs / "serve-key.log", "--api-key", "secret")]
    try:
        yield tuple(s.wait() for s in started)
    finally:
        for s in started:
            s.stop()


@pytest.fixture(scope="module")
def browser(servers, tmp_path_factory):
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    profile = tmp_path_factory.mktemp("chromium-profile")
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--disable-component-update", "--disable-sync",
                "--no-first-run", "--autoplay-policy=no-user-gesture-required", f"--user-data-dir={profile}",
                "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream", "--window-size=1280,900"):
        options.add_argument(arg)
    driver = webdriver.Chrome(options=options, service=Service(CHROMEDRIVER))
    driver.set_script_timeout(WAIT_S)
    try:
        yield driver
    finally:
        driver.quit()


def _wait(driver, condition, what: str, timeout: float = WAIT_S):
    from selenium.common.exceptions import TimeoutException
    from selenium.webdriver.support.ui import WebDriverWait

    try:
        return WebDriverWait(driver, timeout, poll_frequency=0.1).until(lambda d: condition(d))
    except TimeoutException:
        errors = [e.text for e in driver.find_elements("css selector", ".error") if e.text]
        pytest.fail(f"timed out waiting for {what}; errors on the page: {errors}")


def _open(driver, url: str) -> None:
    driver.get(url + "/")
    _wait(driver, lambda d: d.find_element("id", "model").text not in ("", "…"), "the model name")


# Records the states each answer passes through and counts changes to its text, before they happen.
WATCH = """
window.__answers = [];
new MutationObserver((records) => {
  for (const r of records) {
    const answer = r.target.closest ? r.target.closest('.answer')
                 : r.target.parentElement && r.target.parentElement.closest('.answer');
    if (!answer) continue;
    if (!answer.__log) { answer.__log = {states: [], textUpdates: 0}; window.__answers.push(answer.__log); }
    if (r.type === 'attributes' && r.attributeName === 'data-state') answer.__log.states.push(answer.dataset.state);
    else if (r.type !== 'attributes') answer.__log.textUpdates++;
  }
}).observe(document.getElementById('chat'), {subtree: true, childList: true, characterData: true,
                                             attributes: true, attributeFilter: ['data-state']});
"""


def _ask(driver, question: str, enter: bool = False):
    """Type and send a question; the new answer's element once it has ended (done, error or stopped)."""
    from selenium.webdriver.common.keys import Keys

    before = len(driver.find_elements("css selector", ".answer"))
    box = driver.find_element("id", "question")
    box.send_keys(question)
    if enter:
        box.send_keys(Keys.ENTER)
    else:
        driver.find_element("id", "send").click()
    _wait(driver, lambda d: len(d.find_elements("css selector", ".answer")) > before, "the answer to start")
    answer = driver.find_elements("css selector", ".answer")[-1]
    _wait(driver, lambda d: answer.get_attribute("data-state") in ("done", "error", "stopped"), f"the answer to {question!r}")
    return answer


def _upload(driver, path: Path) -> None:
    before = len(driver.find_elements("css selector", "#pending li"))
    driver.find_element("id", "file").send_keys(str(path))
    _wait(driver, lambda d: len(d.find_elements("css selector", "#pending li")) > before, "the clip to be added")


def test_chat_streams_and_cuts_spans(servers, browser, tmp_path):
    driver, (served, _) = browser, servers
    _open(driver, served.url)
    assert driver.find_element("id", "model").text == "lite"
    driver.execute_script(WATCH)

    _upload(driver, CLIP)
    pending = driver.find_element("css selector", "#pending li")
    assert CLIP.name in pending.text and pending.get_attribute("data-format") == "flac"
    assert pending.find_element("css selector", "audio").get_attribute("src").startswith("blob:")

    first = _ask(driver, "Recognize the speech", enter=True)
    assert first.get_attribute("data-state") == "done", first.text
    assert "middle classes" in first.find_element("css selector", ".text").text.lower()
    log = driver.execute_script("return window.__answers[0]")
    assert "streaming" in log["states"] and log["states"][-1] == "done", log  # it went through the stream
    assert log["textUpdates"] >= 1, log
    assert int(first.get_attribute("data-events")) >= 3  # role, content..., finish (and usage) events
    assert "first text" in first.find_element("css selector", ".timings").text
    assert "tokens" in first.find_element("css selector", ".timings").text  # lite counts none: says so
    assert driver.find_elements("css selector", "#pending li") == []  # the clip went with the question

    second = _ask(driver, 'Find the start time and end time of the word "middle classes"')
    assert second.get_attribute("data-state") == "done", second.text
    text = second.find_element("css selector", ".text").text
    assert "<|" not in text
    times = [float(t.text.removesuffix(" s")) for t in second.find_elements("css selector", ".ts")]
    assert len(times) == 2 and times[0] < times[1], text
    raw = driver.execute_script("return window.qwenAudioPage.history[3].content")
    assert "<|" in raw  # the history keeps the model's own tokens

    _wait(driver, lambda d: second.find_elements("css selector", ".span[data-state]"), "the span player")
    span = second.find_element("css selector", ".span")
    assert span.get_attribute("data-state") == "ready", span.text
    assert "middle classes" in span.text
    audio = span.find_element("css selector", "audio")
    assert audio.get_attribute("src").startswith("blob:")
    meta = driver.execute_async_script("""
        const [audio, done] = arguments;
        const report = () => done({duration: audio.duration});
        audio.addEventListener('error', () => done({error: String(audio.error && audio.error.message)}));
        if (audio.readyState >= 1) report(); else audio.addEventListener('loadedmetadata', report);
    """, audio)
    assert "error" not in meta, meta
    assert abs(meta["duration"] - (times[1] - times[0])) < 0.05, (meta, times)
    assert abs(meta["duration"] - 0.93) <= 0.25, meta
    played = driver.execute_async_script("""
        const [audio, done] = arguments;
        audio.play().then(() => setTimeout(() => done({paused: audio.paused, t: audio.currentTime}), 300),
                          (e) => done({error: e.name + ': ' + e.message}));
    """, audio)
    assert "error" not in played and (not played["paused"] or played["t"] > 0), played
    link = span.find_element("css selector", "a[download]")
    assert link.get_attribute("download").endswith(".wav") and link.get_attribute("href").startswith("blob:")

    problems = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems  # no script errors, nothing failed to load

    shot = tmp_path / "page.png"
    driver.save_screenshot(str(shot))
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    size = driver.get_window_size()
    driver.set_window_size(390, 844)  # a phone
    try:
        assert driver.execute_script("return document.documentElement.scrollWidth <= window.innerWidth")
        driver.save_screenshot(str(tmp_path / "page-phone.png"))
    finally:
        driver.set_window_size(size["width"], size["height"])


# How many pixels of a canvas are drawn on (not transparent).
INKED = """
const c = arguments[0], data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
let n = 0;
for (let i = 3; i < data.length; i += 4) if (data[i]) n++;
return {inked: n, pixels: c.width * c.height};
"""


def _bands(view, kind: str) -> list[dict]:
    return [{"label": b.get_attribute("data-label"), "start": float(b.get_attribute("data-start")),
             "end": float(b.get_attribute("data-end")), "el": b}
            for b in view.find_elements("css selector", f".band[data-kind={kind}]")]


def _playing(driver, band) -> dict:
    """Click a waveform's band; what the page's player then plays (its span's length, and whether it runs)."""
    band.click()
    return driver.execute_async_script("""
        const [band, done] = arguments, player = document.getElementById('player');
        const t0 = performance.now();
        (function poll() {
          if (band.dataset.playing === 'playing' && player.readyState >= 1 && (!player.paused || player.currentTime > 0))
            return done({duration: player.duration, src: player.src, state: window.qwenAudioPage.playing,
                         paused: player.paused, t: player.currentTime,
                         near: band.closest('.wave').contains(player)});
          if (performance.now() - t0 > 20000) return done({timeout: true, playing: band.dataset.playing || null,
                                                          error: player.error && player.error.message});
          setTimeout(poll, 50);
        })();
    """, band)


def test_waveforms_mark_sound_events_and_answer_spans(servers, browser, tmp_path):
    """Each clip is drawn as a waveform with lite's sound events (from /v1/audio/events) and the answer's
    grounded span as bands; a click on a band plays that span."""
    driver, (served, _) = browser, servers
    driver.get_log("browser")  # what earlier tests left there is not this test's
    _open(driver, served.url)
    _upload(driver, GLASS)
    _upload(driver, CLIP)
    glass, speech = driver.find_elements("css selector", "#pending li .wave")
    _wait(driver, lambda d: glass.get_attribute("data-state") == "drawn" and speech.get_attribute("data-state") == "drawn",
          "the waveforms")
    for view in (glass, speech):
        ink = driver.execute_script(INKED, view.find_element("css selector", "canvas"))
        assert ink["inked"] > 0.05 * ink["pixels"], ink  # a waveform, not a blank canvas
    _wait(driver, lambda d: _bands(glass, "event"), "the glass clip's sound events")
    [event] = [b for b in _bands(glass, "event") if "glass" in b["label"]]
    assert event["start"] < 0.5 and 1.0 < event["end"] <= 4.1, event
    assert "glass" in event["el"].text and event["el"].get_attribute("title").startswith(event["label"])
    _wait(driver, lambda d: "No sound events" in speech.text or _bands(speech, "event"), "the speech clip's events")
    assert not any("glass" in b["label"] for b in _bands(speech, "event"))

    answer = _ask(driver, 'Find the start time and end time of the word "middle classes"')
    assert answer.get_attribute("data-state") == "done", answer.text
    turn = driver.find_elements("css selector", ".turn.user")[-1]
    glass, speech = turn.find_elements("css selector", ".wave")  # the clips, now drawn in the question
    _wait(driver, lambda d: _bands(speech, "span"), "the answer's span on the speech clip")
    [span] = _bands(speech, "span")
    assert span["label"] == "middle classes" and abs(span["start"] - 2.33) < 0.2 and abs(span["end"] - 3.26) < 0.2, span
    assert not _bands(glass, "span") and [b["label"] for b in _bands(glass, "event")] == [event["label"]]

    played = _playing(driver, span["el"])
    assert "timeout" not in played and played["near"] and played["src"].startswith("blob:"), played
    assert abs(played["duration"] - (span["end"] - span["start"])) < 0.05, (played, span)
    assert played["state"] == {"clip": CLIP.name, "kind": "span", "label": "middle classes", "start": span["start"],
                               "end": span["end"]}, played
    [event] = _bands(glass, "event")
    played = _playing(driver, event["el"])
    assert "timeout" not in played and played["state"]["label"] == event["label"] and played["near"], played
    assert abs(played["duration"] - (event["end"] - event["start"])) < 0.05, (played, event)
    assert span["el"].get_attribute("data-playing") is None  # only the band playing now is marked

    problems = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE"]
    assert not problems, problems
    driver.save_screenshot(str(tmp_path / "waveforms.png"))


def test_api_error_then_key_and_recording(servers, browser, tmp_path):
    driver, (_, keyed) = browser, servers
    _open(driver, keyed.url)
    assert driver.find_element("id", "model").text == "lite"  # from /health while /v1/models needs the key
    _upload(driver, CLIP)

    failed = _ask(driver, "Recognize the speech")
    assert failed.get_attribute("data-state") == "error"
    message = failed.find_element("css selector", ".error").text
    assert "401" in message and "API key" in message, message
    # The question and its clip are back in the composer, out of the conversation.
    assert driver.find_element("id", "question").get_attribute("value") == "Recognize the speech"
    assert len(driver.find_elements("css selector", "#pending li")) == 1
    assert driver.execute_script("return window.qwenAudioPage.history.length") == 0
    wave = driver.find_element("css selector", "#pending .wave")  # its sound events were refused too: said quietly
    _wait(driver, lambda d: "No sound events" in wave.text, "the note on the clip's sound events")
    assert "401" in wave.text and not wave.find_elements("css selector", ".error, .band")

    from selenium.webdriver.common.keys import Keys

    driver.find_element("id", "api-key").send_keys("secret", Keys.TAB)  # change: stored, models reloaded
    driver.find_element("id", "question").clear()
    answer = _ask(driver, "Recognize the speech")
    assert answer.get_attribute("data-state") == "done", answer.text
    assert "middle classes" in answer.text.lower()
    wave = driver.find_elements("css selector", ".turn.user .wave")[-1]  # asked again with the key: nothing named
    _wait(driver, lambda d: "No sound events named." in wave.text, "the clip's sound events, with the key")
    assert driver.execute_script("return localStorage.getItem('qwen-audio.api-key')") == "secret"
    driver.save_screenshot(str(tmp_path / "error-then-key.png"))

    # A clip the server cannot decode: a 400 naming the clip by its file name.
    bogus = tmp_path / "not-audio.wav"
    bogus.write_bytes(b"this is not audio" * 64)
    _upload(driver, bogus)
    bad = _ask(driver, "Recognize the speech")
    assert bad.get_attribute("data-state") == "error"
    message = bad.find_element("css selector", ".error").text
    assert "400" in message and "not-audio.wav" in message, message
    driver.find_element("css selector", "#pending .remove").click()
    driver.find_element("id", "question").clear()

    # Stop ends an answer mid-way (a new clip takes Whisper a second): the question goes back in the box.
    _upload(driver, AUDIO / "1089_134686_000007_000004.wav")
    driver.find_element("id", "question").send_keys("Recognize the speech")
    driver.find_element("id", "send").click()
    driver.find_element("id", "stop").click()
    stopped = driver.find_elements("css selector", ".answer")[-1]
    _wait(driver, lambda d: stopped.get_attribute("data-state") in ("done", "error", "stopped"), "the stop")
    assert stopped.get_attribute("data-state") == "stopped", stopped.text
    assert driver.execute_script("return window.qwenAudioPage.history.length") == 2  # the first turn only
    while driver.find_elements("css selector", "#pending .remove"):
        driver.find_element("css selector", "#pending .remove").click()
    assert driver.find_elements("css selector", "#pending li") == []

    # Recording (Chromium's fake microphone) adds a webm clip; New conversation clears everything.
    record = driver.find_element("id", "record")
    record.click()
    _wait(driver, lambda d: record.get_attribute("aria-pressed") == "true", "recording to start", 10)
    time.sleep(1.0)
    record.click()
    _wait(driver, lambda d: d.find_elements("css selector", "#pending li"), "the recording to become a clip", 10)
    assert driver.find_element("css selector", "#pending li").get_attribute("data-format") in ("webm", "ogg", "m4a")
    driver.find_element("id", "new").click()
    assert driver.find_elements("css selector", "#chat li, #pending li") == []
    assert driver.execute_script("return window.qwenAudioPage.history.length") == 0


def test_the_page_talks_to_a_qwen2_audio_server(browser, qwen2_audio_folder, tmp_path):
    """The same page against `qwen-audio serve --model <Qwen2-Audio folder>`: a clip and a question, with the
    page's own temperature and max-tokens fields, get the library's greedy answer."""
    import qwen_audio
    from qwen_audio import Audio, Message, Text

    folder = qwen2_audio_folder[0]
    served = Served(tmp_path / "serve-qwen2.log", "--dtype", "float32", "--served-model-name", "qwen2",
                    model=str(folder)).wait()
    try:
        driver = browser
        driver.get_log("browser")  # what earlier tests left there (their deliberate 401s) is not this test's
        _open(driver, served.url)
        assert driver.find_element("id", "model").text == "qwen2"
        for field, value in (("temperature", "0"), ("max-tokens", "8")):  # the options panel's fields
            driver.execute_script("document.getElementById(arguments[0]).value = arguments[1]", field, value)
        _upload(driver, CLIP)
        answer = _ask(driver, "What does he say?")
        assert answer.get_attribute("data-state") == "done", answer.text
        model, _ = qwen_audio.load(folder, dtype="float32")
        want = "".join(model.respond([Message("user", [Audio(CLIP.read_bytes()), Text("What does he say?")])],
                                     do_sample=False, max_new_tokens=8))
        assert answer.find_element("css selector", ".text").text == want.strip()
        # This model names no sounds: its /v1/audio/events answers 400 (the page just draws no event bands).
        problems = [e["message"] for e in driver.get_log("browser")
                    if e["level"] == "SEVERE" and "/v1/audio/events" not in e["message"]]
        assert not problems, problems
    finally:
        served.stop()
