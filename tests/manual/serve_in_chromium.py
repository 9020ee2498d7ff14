"""Check the demo page in a real browser, by hand (not collected by pytest, not run in CI).

    python tests/manual/serve_in_chromium.py runs/x/best.pt [--out /tmp/serve-check]

Starts `python -m vitaudio.serve CHECKPOINT --port 0`, opens the page in headless Chromium, checks that its
stylesheet (/page.css) is applied and its script (/page.js) ran, uploads a generated clip through the file input,
reads the predicted label from the page, uploads a text file and reads the refusal, records 2 s from Chromium's
fake microphone (a beep; the AudioWorklet is /tap.js) and reads that prediction, reads the browser's console for
errors (a page file that did not load, a script error), and saves a screenshot of the page after the upload and
after the recording. Prints a JSON summary; exits 1 if a step fails. Trains nothing: make a checkpoint first,
e.g. `python train.py --model mini --epochs 2 --out /tmp/run`.

The generated clip is a new demo-style clip of the checkpoint's first class when the checkpoint knows the demo
classes (`vitaudio.demo`, a seed the demo set does not use), else a 440 Hz tone.

Needs what the project does not: Debian's `chromium` and `chromium-driver` (`apt-get install chromium
chromium-driver`) and selenium in the venv (`.venv/bin/pip install selenium`).
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf

CHROMIUM_FLAGS = ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync",
                  "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream", "--window-size=1000,800")


def write_clip(path: Path, classes: list[str]) -> str | None:
    """Write a clip to upload; return the class it should be, when known."""
    from vitaudio.demo import CLASSES, synthesize_clip

    if classes and set(classes) <= set(CLASSES):
        sf.write(path, synthesize_clip(classes[0], 1000, seed=7), 22050, subtype="PCM_16")
        return classes[0]
    t = np.arange(3 * 22050) / 22050
    sf.write(path, 0.4 * np.sin(2 * np.pi * 440 * t), 22050, subtype="PCM_16")
    return None


def start_server(checkpoint: Path) -> tuple[subprocess.Popen, str]:
    process = subprocess.Popen([sys.executable, "-m", "vitaudio.serve", str(checkpoint), "--port", "0"],
                               stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"http://\S+/", line)
    if not match:
        process.kill()
        raise SystemExit(f"the server did not start: {line!r}")
    return process, match.group()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("--out", type=Path, default=Path(tempfile.gettempdir()) / "vitaudio-serve-check",
                        help="folder for the clip, the screenshots and summary.json")
    parser.add_argument("--chromium", default="/usr/bin/chromium")
    parser.add_argument("--chromedriver", default="/usr/bin/chromedriver")
    args = parser.parse_args()

    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from vitaudio.checkpoint import load_checkpoint

    args.out.mkdir(parents=True, exist_ok=True)
    classes = load_checkpoint(args.checkpoint)["classes"]
    clip = args.out / "clip.wav"
    expected = write_clip(clip, classes)
    (args.out / "not-audio.wav").write_text("this is text, not a sound\n")
    server, url = start_server(args.checkpoint)
    options = webdriver.ChromeOptions()
    options.binary_location = args.chromium
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={tempfile.mkdtemp(prefix='chromium-')}"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(executable_path=args.chromedriver), options=options)
    summary = {"url": url, "classes": classes, "expected": expected, "steps": {}}
    wait = WebDriverWait(driver, 90)

    def text(element_id: str) -> str:
        return driver.find_element(By.ID, element_id).text

    def screenshot(name: str) -> None:
        """The whole page, below the fold too (DevTools' captureBeyondViewport)."""
        width, height = driver.execute_script("const e = document.documentElement; "
                                              "return [e.scrollWidth, e.scrollHeight];")
        shot = driver.execute_cdp_cmd("Page.captureScreenshot", {
            "captureBeyondViewport": True, "clip": {"x": 0, "y": 0, "width": width, "height": height, "scale": 1}})
        (args.out / name).write_bytes(base64.b64decode(shot["data"]))
    try:
        driver.get(url)
        wait.until(lambda d: "classes" in text("info"))
        summary["info"] = text("info")
        border = driver.execute_script("return getComputedStyle(document.getElementById('drop')).borderStyle")
        summary["steps"]["page_files"] = {"drop_border": border, "ok": border == "dashed"}  # page.js ran: info

        driver.find_element(By.ID, "file").send_keys(str(clip.resolve()))
        wait.until(lambda d: text("top-label") and "clip.wav:" in text("status"))
        screenshot("upload.png")
        summary["steps"]["upload"] = {
            "label": text("top-label"), "status": text("status"),
            "bars": [row.text.replace("\n", " ") for row in driver.find_elements(By.CSS_SELECTOR, ".bar-row")],
            "segments": [s.text for s in driver.find_elements(By.CSS_SELECTOR, ".segment")],
            "mel_loaded": driver.execute_script("return document.getElementById('mel').naturalWidth > 0"),
            "ok": bool(text("top-label")) and (expected is None or text("top-label") == expected)}

        driver.find_element(By.ID, "file").send_keys(str((args.out / "not-audio.wav").resolve()))
        wait.until(lambda d: "error" in driver.find_element(By.ID, "status").get_attribute("class"))
        summary["steps"]["refusal"] = {"status": text("status"),
                                       "ok": text("status").startswith("not an audio file libsndfile can read")}

        record = driver.find_element(By.ID, "record")
        if record.is_displayed():
            record.click()
            wait.until(lambda d: "recording..." in text("status"))
            time.sleep(2.0)
            record.click()
            wait.until(lambda d: text("status").startswith("recording ("))
            wait.until(lambda d: "segment(s)" in text("status") or "error" in
                       driver.find_element(By.ID, "status").get_attribute("class"))
            screenshot("recording.png")
            summary["steps"]["recording"] = {"label": text("top-label"), "status": text("status"),
                                             "ok": "segment(s)" in text("status")}
        else:
            summary["steps"]["recording"] = {"ok": False, "status": "the Record button is hidden"}
        errors = [entry["message"] for entry in driver.get_log("browser") if entry["level"] == "SEVERE"
                  and "/api/predict" not in entry["message"]]  # the refusal above is a 400 the console reports
        summary["steps"]["console"] = {"errors": errors, "ok": not errors}
    finally:
        driver.quit()
        server.terminate()
        server.wait(timeout=10)
    summary["ok"] = all(step["ok"] for step in summary["steps"].values())
    (args.out / "summary.json").write_text(json.dumps(summary, indent=1))
    print(json.dumps(summary, indent=1))
    print(f"screenshots in {args.out}")
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
