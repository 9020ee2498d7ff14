"""The demo server through its HTTP API: the page, predictions, and the uploads it refuses."""
import base64
import io
import json
import re
import subprocess
import sys
import threading
import urllib.error
import urllib.request

import numpy as np
import pytest
import soundfile as sf

from vitaudio import serve
from vitaudio.inference import pipeline

MAX_UPLOAD_MB = 0.2


@pytest.fixture(scope="module")
def server(tiny_run):
    """A DemoServer on a free port of 127.0.0.1, serving in a thread."""
    demo = serve.make_server(pipeline(tiny_run / "best.pt", device="cpu"), "127.0.0.1", 0,
                             max_upload_mb=MAX_UPLOAD_MB)
    thread = threading.Thread(target=demo.serve_forever, daemon=True)
    thread.start()
    yield demo
    demo.shutdown()
    demo.server_close()
    thread.join(timeout=5)


def wav_bytes(seconds: float = 2.5, freq: float = 900.0, sample_rate: int = 22050) -> bytes:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    buffer = io.BytesIO()
    sf.write(buffer, 0.4 * np.sin(2 * np.pi * freq * t), sample_rate, format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def request(url: str, body: bytes | None = None) -> tuple[int, dict, bytes]:
    """GET (body None) or POST `body` -> (status, headers, body), for error statuses too."""
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=body), timeout=60) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as err:
        return err.code, dict(err.headers), err.read()


def test_page_is_one_html_document_that_loads_nothing_from_elsewhere(server):
    status, headers, body = request(server.url)
    page = body.decode()
    assert status == 200 and headers["Content-Type"].startswith("text/html")
    assert 'type="file"' in page and "/api/predict" in page and "getUserMedia" in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//|https?://|@import""", page)  # no CDN, fonts, analytics


def test_info_describes_the_model(server):
    status, _, body = request(server.url + "api/info")
    info = json.loads(body)
    assert status == 200 and info["classes"] == ["bass", "mid", "treble"]
    assert info["max_upload_mb"] == "0.2" and info["sample_rate"] == 22050


def test_predict_returns_predictions_segments_and_the_mel_as_png(server):
    status, headers, body = request(server.url + "api/predict", wav_bytes(seconds=2.5))
    answer = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    scores = [p["score"] for p in answer["predictions"]]
    assert [p["label"] for p in answer["predictions"]] and scores == sorted(scores, reverse=True)
    assert {p["label"] for p in answer["predictions"]} == {"bass", "mid", "treble"} and sum(scores) <= 1 + 1e-6
    assert answer["duration"] == pytest.approx(2.5, abs=0.01)
    assert [(s["start"], s["end"]) for s in answer["segments"]][0][0] == 0 and answer["segments"][-1]["end"] == 2.5
    prefix = "data:image/png;base64,"
    assert answer["mel_png"].startswith(prefix)
    assert base64.b64decode(answer["mel_png"][len(prefix):])[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_honours_top_k_and_refuses_a_bad_one(server):
    status, _, body = request(server.url + "api/predict?top_k=1", wav_bytes(seconds=1.0))
    assert status == 200 and len(json.loads(body)["predictions"]) == 1
    status, _, body = request(server.url + "api/predict?top_k=zero", wav_bytes(seconds=1.0))
    assert status == 400 and "top_k" in json.loads(body)["error"]


def test_non_audio_upload_is_refused_with_a_clear_message(server):
    status, _, body = request(server.url + "api/predict", b"<html>this is not a sound</html>")
    assert status == 400
    assert json.loads(body)["error"].startswith("not an audio file libsndfile can read: ")


def test_oversized_upload_is_refused_before_it_is_read(server):
    status, _, body = request(server.url + "api/predict", b"\0" * int(1.5 * MAX_UPLOAD_MB * 1e6))
    assert status == 413
    assert json.loads(body)["error"].startswith(f"upload larger than {MAX_UPLOAD_MB} MB")


@pytest.mark.parametrize("body, message", [(b"", "empty upload"), (None, "silent")])
def test_empty_and_silent_uploads_are_refused(server, body, message):
    if body is None:
        buffer = io.BytesIO()
        sf.write(buffer, np.zeros(22050), 22050, format="WAV")
        body = buffer.getvalue()
    status, _, answer = request(server.url + "api/predict", body)
    assert status == 400 and message in json.loads(answer)["error"]


def test_unknown_paths_answer_404_in_json(server):
    for body in (None, b"x"):
        status, _, answer = request(server.url + "api/nothing", body)
        assert status == 404 and "error" in json.loads(answer)


def test_command_binds_localhost_by_default_and_serves_the_api(tiny_run):
    process = subprocess.Popen([sys.executable, "-m", "vitaudio.serve", str(tiny_run / "best.pt"), "--port", "0",
                                "--device", "cpu"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        line = process.stdout.readline()
        url = re.search(r"http://\S+/", line)
        assert url and url.group().startswith("http://127.0.0.1:"), line + process.stderr.read(2000)
        status, _, body = request(url.group() + "api/predict", wav_bytes(seconds=1.0))
        assert status == 200 and json.loads(body)["predictions"]
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_command_names_a_bad_checkpoint(tmp_path, capsys):
    (tmp_path / "x.pt").write_bytes(b"not a checkpoint")
    assert serve.main([str(tmp_path / "x.pt")]) == 2
    assert "x.pt" in capsys.readouterr().err
