"""The demo server through its HTTP API: the page, predictions, a tagger's tags, and the uploads it refuses."""
import base64
import http.client
import io
import json
import re
import socket
import subprocess
import sys
import urllib.error
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from conftest import running

from vitaudio import serve
from vitaudio.checkpoint import load_checkpoint
from vitaudio.inference import pipeline

MAX_UPLOAD_MB = 0.2


@pytest.fixture(scope="module")
def server(tiny_run):
    with running(pipeline(tiny_run / "best.pt", device="cpu"), max_upload_mb=MAX_UPLOAD_MB) as demo:
        yield demo


@pytest.fixture(scope="module")
def tagger_server(tiny_tagger):
    with running(pipeline(tiny_tagger / "best.pt", device="cpu"), top_k=1) as demo:
        yield demo


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


PAGE_ASSETS = {"page.css": "text/css", "page.js": "text/javascript", "tap.js": "text/javascript"}


class TagCollector(HTMLParser):
    """Every start tag of an HTML document with its attributes, and the text inside each <script> and <style>."""

    def __init__(self):
        super().__init__()
        self.tags: list[tuple[str, dict]] = []
        self.inline: list[str] = []  # text inside <script> or <style>
        self._open = None

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        self._open = tag if tag in ("script", "style") else None

    def handle_endtag(self, tag):
        self._open = None

    def handle_data(self, data):
        if self._open and data.strip():
            self.inline.append(data)


def page_tags(html: str) -> TagCollector:
    collector = TagCollector()
    collector.feed(html)
    return collector


@pytest.mark.parametrize("path", ["", "index.html"])
def test_page_is_served_as_html(server, path):
    status, headers, body = request(server.url + path)
    assert status == 200 and headers["Content-Type"] == "text/html; charset=utf-8"
    assert 'type="file"' in body.decode() and 'id="record"' in body.decode()


@pytest.mark.parametrize("name, content_type", PAGE_ASSETS.items())
def test_each_page_file_is_served_with_its_content_type(server, name, content_type):
    status, headers, body = request(server.url + name)
    assert status == 200 and headers["Content-Type"] == content_type + "; charset=utf-8" and body.strip()
    assert body == (Path(serve.__file__).parent / "page" / name).read_bytes()


def test_page_has_no_inline_script_style_or_event_handlers(server):
    tags = page_tags(request(server.url)[2].decode())
    assert not tags.inline
    for tag, attrs in tags.tags:
        assert not [name for name in attrs if name.startswith("on") or name == "style"], (tag, attrs)
        assert not any((value or "").strip().lower().startswith("javascript:") for value in attrs.values())
    assert [attrs["src"] for tag, attrs in tags.tags if tag == "script"] == ["/page.js"]
    assert "/page.css" in [attrs.get("href") for tag, attrs in tags.tags if tag == "link"]


def test_page_and_its_files_load_nothing_from_elsewhere(server):
    page = request(server.url)[2].decode()
    assets = {name: request(server.url + name)[2].decode() for name in PAGE_ASSETS}
    assert "/api/predict" in assets["page.js"] and "getUserMedia" in assets["page.js"]
    assert '"/tap.js"' in assets["page.js"] and "registerProcessor(" in assets["tap.js"]
    for text in (page, *assets.values()):  # no CDN, fonts, analytics
        assert not re.search(r"""(src|href)=["']?(https?:)?//|https?://|@import""", text)
    referenced = [attrs.get("src") or attrs.get("href") for tag, attrs in page_tags(page).tags
                  if tag in ("script", "link") and attrs.get("rel") != "icon"]
    assert sorted(path.lstrip("/") for path in referenced) == ["page.css", "page.js"]


@pytest.mark.parametrize("path", ["/missing.js", "/page/page.js", "/serve.py", "/__init__.py", "/page/../serve.py",
                                  "/../serve.py", "/%2e%2e/serve.py", "/page.js/../serve.py", "/index.html/",
                                  "//etc/passwd"])
def test_anything_but_the_page_files_answers_404(server, path):
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=30)  # sends the path as written, ".." and all
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        assert response.status == 404 and "error" in json.loads(response.read())
    finally:
        connection.close()


def test_info_describes_the_model(server):
    status, _, body = request(server.url + "api/info")
    info = json.loads(body)
    assert status == 200 and info["classes"] == ["bass", "mid", "treble"]
    assert info["max_upload_mb"] == "0.2" and info["sample_rate"] == 22050
    assert info["max_seconds"] == serve.DEFAULT_MAX_SECONDS
    assert info["task"] == "single_label" and info["thresholds"] is None


def test_info_of_a_tagger_says_its_task_pooling_and_thresholds(tagger_server, tiny_tagger):
    status, _, body = request(tagger_server.url + "api/info")
    info, checkpoint = json.loads(body), load_checkpoint(tiny_tagger / "best.pt")
    assert status == 200 and info["task"] == "multi_label" and info["classes"] == ["high", "low", "mid"]
    assert info["pooling"] == checkpoint["pooling"] and info["thresholds"] == checkpoint["thresholds"]


def test_a_taggers_answer_marks_the_tagged_labels_of_the_clip_and_of_each_segment(tagger_server, tiny_tagger):
    clips = sorted((tiny_tagger.parent / "audio").glob("*.wav"))[:4]
    thresholds = dict(zip(*(json.loads(request(tagger_server.url + "api/info")[2])[key]
                            for key in ("classes", "thresholds"))))
    clf = pipeline(tiny_tagger / "best.pt", device="cpu")
    for clip in clips:
        status, _, body = request(tagger_server.url + "api/predict", clip.read_bytes())
        answer = json.loads(body)
        result = clf(clip, top_k=1, return_segments=True)  # alone, as the server scores it: the same floats
        assert status == 200 and answer["duration"] == pytest.approx(2.0, abs=0.01)
        predictions = answer["predictions"] + [p for s in answer["segments"] for p in s["predictions"]]
        assert all(set(p) == {"label", "score", "tagged"} for p in predictions)
        assert all(p["tagged"] == (p["score"] >= thresholds[p["label"]]) for p in answer["predictions"])
        assert [(p["label"], p["tagged"]) for p in answer["predictions"]] == \
            [(p["label"], p["tagged"]) for p in result["predictions"]]  # every tag, and the top label at top_k 1
        assert [[(p["label"], p["tagged"]) for p in s["predictions"]] for s in answer["segments"]] == \
            [[(p["label"], p["tagged"]) for p in s["predictions"]] for s in result["segments"]]


def test_predict_returns_predictions_segments_and_the_mel_as_png(server):
    status, headers, body = request(server.url + "api/predict", wav_bytes(seconds=2.5))
    answer = json.loads(body)
    assert status == 200 and headers["Content-Type"] == "application/json"
    scores = [p["score"] for p in answer["predictions"]]
    assert [p["label"] for p in answer["predictions"]] and scores == sorted(scores, reverse=True)
    assert {p["label"] for p in answer["predictions"]} == {"bass", "mid", "treble"} and sum(scores) <= 1 + 1e-6
    assert answer["duration"] == pytest.approx(2.5, abs=0.01)
    assert answer["segments"][0]["start"] == 0 and answer["segments"][-1]["end"] == 2.5
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


def multipart_body(fields: dict[str, str], file_name: str, file_bytes: bytes, boundary: str) -> bytes:
    """A multipart/form-data body as `curl -F name=value -F file=@clip.wav` sends it: the form fields, then the file."""
    parts = [f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
             for name, value in fields.items()]
    parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{file_name}"\r\n'
                 f"Content-Type: audio/wav\r\n\r\n".encode() + file_bytes + b"\r\n")
    return b"".join(parts) + f"--{boundary}--\r\n".encode()


def post(server, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict]:
    host, port = server.server_address[:2]
    connection = http.client.HTTPConnection(host, port, timeout=60)
    try:
        connection.request("POST", path, body=body, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read())
    finally:
        connection.close()


def test_multipart_form_upload_is_classified_like_a_raw_body(server):
    """`curl -F file=@clip.wav` (multipart/form-data) used to be refused as "not an audio file"."""
    clip, boundary = wav_bytes(seconds=1.0), "------------------------d74496d66958873e"
    body = multipart_body({"note": "a form field before the file"}, "clip.wav", clip, boundary)
    status, answer = post(server, "/api/predict?top_k=2", body,
                          {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    assert status == 200 and answer["duration"] == pytest.approx(1.0, abs=0.01)
    assert answer["predictions"] == json.loads(request(server.url + "api/predict?top_k=2", clip)[2])["predictions"]


@pytest.mark.parametrize("content_type, body, message", [
    ("multipart/form-data; boundary=xyz", b'--xyz\r\nContent-Disposition: form-data; name="a"\r\n\r\n1\r\n--xyz--\r\n',
     "without a complete file part"),
    ("multipart/form-data", b"--xyz\r\n\r\n", "without a valid boundary")])
def test_multipart_upload_without_a_file_is_refused_with_a_message(server, content_type, body, message):
    status, answer = post(server, "/api/predict", body, {"Content-Type": content_type})
    assert status == 400 and message in answer["error"]


def test_expect_100_continue_is_answered_before_the_body_and_a_refusal_instead_of_it(server):
    """curl sends `Expect: 100-continue` with larger uploads and waits for the go-ahead before the body."""
    clip = wav_bytes(seconds=1.0)
    for length, expected in ((len(clip), b"HTTP/1.1 100 Continue\r\n"), (10**9, b"HTTP/1.1 413 ")):
        head = (f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n"
                f"Expect: 100-continue\r\n\r\n").encode()
        with socket.create_connection(server.server_address[:2], timeout=30) as sock:
            sock.sendall(head)
            assert sock.recv(len(expected)) == expected
            if length == len(clip):
                sock.sendall(clip)
                received = b""
                while chunk := sock.recv(65536):
                    received += chunk
                assert b"HTTP/1.1 200 OK\r\n" in received and b'"predictions"' in received


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


def test_help_shows_every_default(capsys):
    with pytest.raises(SystemExit):
        serve.main(["--help"])
    usage = " ".join(capsys.readouterr().out.split())
    for default in ("(default: 127.0.0.1)", f"(default: {serve.DEFAULT_PORT})", "(default: 5)",
                    f"(default: {serve.DEFAULT_MAX_UPLOAD_MB})", "(default: auto)",
                    f"(default: {serve.DEFAULT_MAX_SECONDS})", f"(default: {serve.DEFAULT_TIMEOUT})",
                    f"(default: {serve.DEFAULT_MAX_CONNECTIONS})"):
        assert default in usage
    assert "--allowed-host NAME" in usage and "--allow-origin ORIGIN" in usage and "--max-seconds" in usage


def test_command_passes_its_limits_and_allowed_hosts_and_origins_to_the_server(monkeypatch, capsys):
    made = {}

    class Stopped:
        url = "http://127.0.0.1:1/"

        def serve_forever(self):
            raise KeyboardInterrupt

        def server_close(self):
            made["closed"] = True

    def fake_make_server(clf, host, port, **options):
        made.update(options)
        return Stopped()

    monkeypatch.setattr(serve, "pipeline", lambda checkpoint, device: "classifier")
    monkeypatch.setattr(serve, "make_server", fake_make_server)
    assert serve.main(["x.pt", "--max-seconds", "60", "--timeout", "5", "--max-connections", "8",
                       "--allowed-host", "demo.lan", "--allowed-host", "10.0.0.2",
                       "--allow-origin", "http://app.lan:8000"]) == 0
    assert made == {"top_k": 5, "max_upload_mb": serve.DEFAULT_MAX_UPLOAD_MB, "max_seconds": 60.0, "timeout": 5.0,
                    "max_connections": 8, "allowed_hosts": ("demo.lan", "10.0.0.2"),
                    "allowed_origins": ("http://app.lan:8000",), "closed": True}


@pytest.mark.parametrize("flag", [["--max-seconds", "0"], ["--timeout", "-1"], ["--max-connections", "0"]])
def test_command_refuses_a_limit_out_of_range_in_one_line(flag, capsys):
    assert serve.main(["x.pt", *flag]) == 2
    assert capsys.readouterr().err.count("\n") == 1
