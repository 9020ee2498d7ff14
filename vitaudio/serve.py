"""`python -m vitaudio.serve CHECKPOINT [--host 127.0.0.1] [--port 7860]`: a local demo page and a JSON API.

The page (one HTML document, inline CSS and JS, nothing loaded from elsewhere) takes an audio file, or a
recording from the microphone where the browser allows it (captured as PCM and encoded as WAV in the page, since
browsers record webm/opus, which libsndfile cannot read), and shows the top-k classes as bars, the log-mel and the
timeline of what each segment predicts.

API, for programs: `POST /api/predict` with the raw bytes of an audio file as the body (any Content-Type;
`?top_k=N` optional), e.g. `curl --data-binary @song.wav http://127.0.0.1:7860/api/predict`. Answers JSON
`{"predictions": [{"label", "score"}], "segments": [{"start", "end", "predictions"}], "duration": seconds,
"mel_png": "data:image/png;base64,..."}`; errors are `{"error": message}` with 400 (not audio, silent, bad
query), 411 (no Content-Length), 413 (larger than --max-upload-mb). `GET /api/info` describes the model.

Standard library only (http.server): no extra dependency, no analytics, nothing that reaches the network. It binds
127.0.0.1 unless told otherwise; it is a demo server, not one to expose to the internet.
"""
from __future__ import annotations

import argparse
import base64
import json
import logging
import re
import sys
import threading
import time
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from .audio import AudioDecodeError, load_audio
from .checkpoint import CheckpointError
from .inference import AudioClassifier, InputError, pipeline
from .plots import figure_png, plot_mel

log = logging.getLogger(__name__)

DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 50.0
DRAIN_SECONDS = 5.0  # how long a refused upload is read and dropped, so the client sees the answer, not a reset


class UploadError(Exception):
    """A request the server refuses: HTTP status and a message for the person or program that sent it."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class DemoServer(ThreadingHTTPServer):
    """An HTTP server around one AudioClassifier; requests are served in threads, the model runs one at a time."""

    daemon_threads = True

    def __init__(self, address: tuple[str, int], clf: AudioClassifier, *, top_k: int = 5,
                 max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6)):
        super().__init__(address, DemoHandler)
        self.clf, self.top_k, self.max_upload_bytes = clf, top_k, max_upload_bytes
        self.model_lock = threading.Lock()  # two cores: one clip at a time is as fast as two at once

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def info(self) -> dict:
        clf = self.clf
        return {"classes": clf.classes, "sample_rate": clf.sample_rate, "top_k": self.top_k,
                "segment_seconds": round(clf.segment_rule.frames / clf.mel_config.frames_per_second, 3),
                "max_upload_bytes": self.max_upload_bytes, "max_upload_mb": _megabytes(self.max_upload_bytes)}

    def predict(self, body: bytes, top_k: int) -> dict:
        """The bytes of an audio file -> the API's JSON answer; UploadError for what cannot be classified."""
        if not body:
            raise UploadError(HTTPStatus.BAD_REQUEST, "empty upload: send the bytes of an audio file as the body")
        clf = self.clf
        try:
            samples = load_audio(body, clf.sample_rate)
        except AudioDecodeError as err:
            raise UploadError(HTTPStatus.BAD_REQUEST, f"not an audio file libsndfile can read: "
                                                      f"{_decoder_says(err.reason)}; send WAV, FLAC, OGG/Opus, "
                                                      f"AIFF or MP3") from None
        with self.model_lock:
            try:
                result = clf({"sampling_rate": clf.sample_rate, "array": samples}, top_k=top_k,
                             return_segments=True)
                mel_db = clf.mel_db(samples)
            except InputError as err:  # e.g. silence; the message starts with "input 0: "
                raise UploadError(HTTPStatus.BAD_REQUEST, str(err).split(": ", 1)[-1]) from None
        png = figure_png(plot_mel(mel_db, clf.mel_config))
        return {**result, "duration": round(len(samples) / clf.sample_rate, 3),
                "mel_png": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}


class DemoHandler(BaseHTTPRequestHandler):
    """GET / (the page), GET /api/info, POST /api/predict; every error is JSON with a message."""

    server: DemoServer
    server_version = "vitaudio-serve"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in ("/", "/index.html"):
            self._send(HTTPStatus.OK, PAGE.encode(), "text/html; charset=utf-8")
        elif path == "/api/info":
            self._send_json(HTTPStatus.OK, self.server.info())
        else:
            self._send_json(HTTPStatus.NOT_FOUND, {"error": f"no such page: {path} (try / or POST /api/predict)"})

    def do_POST(self) -> None:
        url = urlsplit(self.path)
        start = time.perf_counter()
        try:
            if url.path != "/api/predict":
                raise UploadError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {url.path} (use /api/predict)")
            top_k = self._top_k(parse_qs(url.query))
            body = self._read_body()
            answer = self.server.predict(body, top_k)
        except UploadError as err:
            self._send_json(err.status, {"error": err.message})
            self._drain()
            return
        except Exception:  # a bug: say so in JSON, keep serving
            log.exception("predict failed")
            self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {"error": "internal error while classifying; "
                                                                        "see the server's log"})
            return
        log.info("classified %.1f s of audio in %.0f ms: %s", answer["duration"],
                 1000 * (time.perf_counter() - start), answer["predictions"][0]["label"])
        self._send_json(HTTPStatus.OK, answer)

    def _top_k(self, query: dict[str, list[str]]) -> int:
        if "top_k" not in query:
            return self.server.top_k
        value = query["top_k"][0]
        if not value.isdigit() or int(value) < 1:
            raise UploadError(HTTPStatus.BAD_REQUEST, f"top_k must be a whole number >= 1, got {value!r}")
        return int(value)

    def _read_body(self) -> bytes:
        length = self.headers.get("Content-Length")
        if length is None:
            raise UploadError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header with the upload")
        if not length.isdigit():
            raise UploadError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
        limit = self.server.max_upload_bytes
        if int(length) > limit:
            raise UploadError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"upload larger than {_megabytes(limit)} MB ({_megabytes(int(length))} MB sent); "
                              f"send a shorter clip")
        self.body_read = True
        return self.rfile.read(int(length))

    def _drain(self) -> None:
        """Read and drop, for a while, the body of an upload refused before it was read: closing a socket with
        unread data makes the kernel send a reset, and the client would see that instead of the message."""
        length = self.headers.get("Content-Length", "")
        if getattr(self, "body_read", False) or not length.isdigit():
            return
        remaining, deadline = int(length), time.monotonic() + DRAIN_SECONDS
        self.connection.settimeout(DRAIN_SECONDS)
        try:
            while remaining > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:  # the client gave up, or the time ran out
            pass

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        self._send(status, json.dumps(payload).encode(), "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)


def make_server(clf: AudioClassifier, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, top_k: int = 5,
                max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB) -> DemoServer:
    """A bound, not yet serving, DemoServer (port 0 = any free port; see `server.url`)."""
    return DemoServer((host, port), clf, top_k=top_k, max_upload_bytes=int(max_upload_mb * 1e6))


def _decoder_says(reason: str) -> str:
    """libsndfile's own words from an AudioDecodeError reason, without the in-memory file's name."""
    reason = re.sub(r"Error opening <[^>]*>: ", "", reason)
    wrapped = re.fullmatch(r"not a readable audio file \((.*)\)", reason)
    return (wrapped.group(1) if wrapped else reason).rstrip(".")


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitaudio.serve", description=__doc__.split("\n\n")[0])
    parser.add_argument("checkpoint", type=Path, help="a train.py checkpoint, e.g. runs/x/best.pt")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 = every interface)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"default {DEFAULT_PORT}; 0 = any free port")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per clip (default 5)")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help=f"largest accepted upload in MB (default {DEFAULT_MAX_UPLOAD_MB:g})")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        clf = pipeline(args.checkpoint, device=args.device)
    except CheckpointError as err:
        print(f"serve: error: {err}", file=sys.stderr)
        return 2
    try:
        server = make_server(clf, args.host, args.port, top_k=args.top_k, max_upload_mb=args.max_upload_mb)
    except OSError as err:
        print(f"serve: error: cannot listen on {args.host}:{args.port}: {err.strerror or err} "
              f"(choose another --port)", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"serve: warning: listening on {args.host}: anyone who can reach this machine can use the page "
              f"(browsers allow recording only on localhost or https)", file=sys.stderr)
    print(f"vitaudio demo: {clf} on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>vitaudio demo</title>
<link rel="icon" href="data:,">
<style>
  body { font-family: system-ui, sans-serif; margin: 0 auto; max-width: 960px; padding: 1rem 1.5rem; color: #222; }
  h1 { font-size: 1.4rem; margin: 0.2rem 0; }
  #info { color: #666; font-size: 0.9rem; }
  .controls { display: flex; gap: 1rem; align-items: center; flex-wrap: wrap; margin: 1rem 0; }
  #drop { border: 2px dashed #aaa; border-radius: 8px; padding: 1rem 1.5rem; flex: 1; min-width: 260px; }
  #drop.over { border-color: #1f77b4; background: #eef5fb; }
  button { font-size: 1rem; padding: 0.5rem 1rem; border-radius: 6px; border: 1px solid #888; background: #f4f4f4;
           cursor: pointer; }
  button.recording { background: #d62728; color: white; border-color: #d62728; }
  #status { min-height: 1.4rem; margin: 0.5rem 0; }
  #status.error { color: #b00020; font-weight: 600; }
  #result[hidden] { display: none; }
  #top-label { font-size: 1.8rem; font-weight: 700; }
  .bar-row { display: grid; grid-template-columns: 9rem 1fr 4rem; gap: 0.5rem; align-items: center; margin: 3px 0; }
  .bar { height: 1.1rem; background: #1f77b4; border-radius: 3px; }
  .bar-row .score { text-align: right; font-variant-numeric: tabular-nums; }
  #mel { width: 100%; margin-top: 1rem; }
  #timeline { position: relative; height: 2.6rem; margin: 0.3rem 0 0.2rem; background: #f0f0f0; border-radius: 4px; }
  .segment { position: absolute; top: 0; bottom: 0; border: 1px solid white; border-radius: 4px; color: white;
             font-size: 0.75rem; overflow: hidden; white-space: nowrap; padding: 2px 4px; box-sizing: border-box; }
  #timeline.two-lanes .lane0 { bottom: 50%; }
  #timeline.two-lanes .lane1 { top: 50%; }
  #timeline-axis { display: flex; justify-content: space-between; color: #666; font-size: 0.8rem; }
</style>
</head>
<body>
<h1>vitaudio demo</h1>
<div id="info">loading the model description...</div>
<div class="controls">
  <label id="drop">Choose or drop an audio file (WAV, FLAC, OGG, MP3):
    <input id="file" type="file" accept="audio/*,.wav,.flac,.ogg,.mp3,.au,.aiff">
  </label>
  <button id="record" type="button" hidden>&#9679; Record</button>
</div>
<div id="status" role="status"></div>
<section id="result" hidden>
  <div>Prediction: <span id="top-label"></span></div>
  <div id="bars"></div>
  <img id="mel" alt="log-mel spectrogram of the clip">
  <div><b>Segments</b> (what each segment alone predicts)</div>
  <div id="timeline"></div>
  <div id="timeline-axis"><span>0 s</span><span id="duration"></span></div>
</section>
<script>
"use strict";
const $ = (id) => document.getElementById(id);
const PALETTE = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
                 "#bcbd22", "#17becf"];
let info = null;

function setStatus(text, isError) {
  $("status").textContent = text;
  $("status").className = isError ? "error" : "";
}

function colour(label) {
  const index = info ? info.classes.indexOf(label) : 0;
  return PALETTE[(index < 0 ? 0 : index) % PALETTE.length];
}

async function loadInfo() {
  try {
    info = await (await fetch("/api/info")).json();
    $("info").textContent = info.classes.length + " classes: " + info.classes.join(", ") + " \\u00b7 segments of " +
      info.segment_seconds + " s \\u00b7 uploads up to " + info.max_upload_mb + " MB";
  } catch (err) {
    $("info").textContent = "cannot reach the server: " + err;
  }
}

async function classify(blob, name) {
  if (info && blob.size > info.max_upload_bytes) {
    setStatus("upload larger than " + info.max_upload_mb + " MB: choose a shorter clip", true);
    return;
  }
  setStatus("classifying " + name + " ...", false);
  let answer;
  try {
    const response = await fetch("/api/predict", {method: "POST", body: blob});
    answer = await response.json();
    if (!response.ok) {
      setStatus(answer.error || ("error " + response.status), true);
      return;
    }
  } catch (err) {
    setStatus("the request failed: " + err, true);
    return;
  }
  show(answer, name);
}

function show(answer, name) {
  $("top-label").textContent = answer.predictions[0].label;
  const bars = $("bars");
  bars.replaceChildren();
  for (const p of answer.predictions) {
    const row = document.createElement("div");
    row.className = "bar-row";
    const label = document.createElement("span");
    label.textContent = p.label;
    const bar = document.createElement("div");
    bar.className = "bar";
    bar.style.width = (100 * p.score).toFixed(1) + "%";
    bar.style.background = colour(p.label);
    const score = document.createElement("span");
    score.className = "score";
    score.textContent = (100 * p.score).toFixed(1) + "%";
    row.append(label, bar, score);
    bars.append(row);
  }
  $("mel").src = answer.mel_png;
  const timeline = $("timeline");
  timeline.replaceChildren();
  let lane = 0, laneEnd = 0, overlapping = false;
  for (const segment of answer.segments) {
    // the last segment is aligned to the clip's end and may overlap the one before: give it the other lane
    lane = segment.start < laneEnd - 1e-6 ? 1 - lane : 0;
    overlapping = overlapping || lane === 1;
    laneEnd = segment.end;
    const top = segment.predictions[0];
    const block = document.createElement("div");
    block.className = "segment lane" + lane;
    block.style.left = (100 * segment.start / answer.duration) + "%";
    block.style.width = (100 * (segment.end - segment.start) / answer.duration) + "%";
    block.style.background = colour(top.label);
    block.textContent = top.label + " " + Math.round(100 * top.score) + "%";
    block.title = segment.start.toFixed(2) + "-" + segment.end.toFixed(2) + " s: " +
      segment.predictions.map((p) => p.label + " " + (100 * p.score).toFixed(1) + "%").join(", ");
    timeline.append(block);
  }
  timeline.classList.toggle("two-lanes", overlapping);
  $("duration").textContent = answer.duration.toFixed(2) + " s";
  $("result").hidden = false;
  setStatus(name + ": " + answer.duration.toFixed(2) + " s, " + answer.segments.length + " segment(s)", false);
}

$("file").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) classify(file, file.name);
});
$("drop").addEventListener("dragover", (event) => { event.preventDefault(); $("drop").classList.add("over"); });
$("drop").addEventListener("dragleave", () => $("drop").classList.remove("over"));
$("drop").addEventListener("drop", (event) => {
  event.preventDefault();
  $("drop").classList.remove("over");
  const file = event.dataTransfer.files[0];
  if (file) classify(file, file.name);
});

// Recording: browsers' MediaRecorder makes webm/opus, which the server's libsndfile cannot read, so the page taps
// the raw samples with an AudioWorklet and writes a 16-bit mono WAV itself.
const TAP = "class Tap extends AudioWorkletProcessor {" +
  " process(inputs) { const channel = inputs[0][0]; if (channel) this.port.postMessage(channel.slice(0));" +
  " return true; } } registerProcessor('tap', Tap);";
let recorder = null;

function encodeWav(chunks, sampleRate) {
  const n = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
  const view = new DataView(new ArrayBuffer(44 + 2 * n));
  const text = (offset, s) => { for (let i = 0; i < s.length; i++) view.setUint8(offset + i, s.charCodeAt(i)); };
  text(0, "RIFF"); view.setUint32(4, 36 + 2 * n, true); text(8, "WAVE");
  text(12, "fmt "); view.setUint32(16, 16, true); view.setUint16(20, 1, true); view.setUint16(22, 1, true);
  view.setUint32(24, sampleRate, true); view.setUint32(28, 2 * sampleRate, true);
  view.setUint16(32, 2, true); view.setUint16(34, 16, true);
  text(36, "data"); view.setUint32(40, 2 * n, true);
  let offset = 44;
  for (const chunk of chunks) {
    for (const sample of chunk) {
      const s = Math.max(-1, Math.min(1, sample));
      view.setInt16(offset, s < 0 ? s * 0x8000 : s * 0x7fff, true);
      offset += 2;
    }
  }
  return new Blob([view], {type: "audio/wav"});
}

async function startRecording() {
  const stream = await navigator.mediaDevices.getUserMedia({audio: true});
  const context = new AudioContext();
  await context.audioWorklet.addModule(URL.createObjectURL(new Blob([TAP], {type: "text/javascript"})));
  const source = context.createMediaStreamSource(stream);
  const tap = new AudioWorkletNode(context, "tap");
  const chunks = [];
  tap.port.onmessage = (event) => chunks.push(event.data);
  const mute = context.createGain();
  mute.gain.value = 0;  // connected to the output so the graph runs, silent so there is no feedback
  source.connect(tap).connect(mute).connect(context.destination);
  recorder = {stream, context, chunks, started: performance.now()};
  $("record").textContent = "\\u25a0 Stop";
  $("record").classList.add("recording");
  setStatus("recording... press Stop to classify", false);
}

async function stopRecording() {
  const {stream, context, chunks, started} = recorder;
  recorder = null;
  stream.getTracks().forEach((track) => track.stop());
  await context.close();
  $("record").textContent = "\\u25cf Record";
  $("record").classList.remove("recording");
  const seconds = ((performance.now() - started) / 1000).toFixed(1);
  if (!chunks.length) {
    setStatus("nothing was recorded", true);
    return;
  }
  classify(encodeWav(chunks, context.sampleRate), "recording (" + seconds + " s)");
}

if (window.isSecureContext && navigator.mediaDevices && navigator.mediaDevices.getUserMedia &&
    window.AudioWorkletNode) {
  $("record").hidden = false;
  $("record").addEventListener("click", async () => {
    try {
      if (recorder) await stopRecording(); else await startRecording();
    } catch (err) {
      recorder = null;
      setStatus("cannot record: " + err.message, true);
    }
  });
}
loadInfo();
</script>
</body>
</html>
"""

if __name__ == "__main__":
    sys.exit(main())
