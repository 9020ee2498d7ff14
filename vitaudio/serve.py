"""`python -m vitaudio.serve CHECKPOINT [--host 127.0.0.1] [--port 7860]`: a local demo page and a JSON API.

The page (vitaudio/page/: index.html, page.css, page.js and tap.js, nothing loaded from elsewhere, no inline script)
takes an audio file, or a recording from the microphone where the browser allows it (captured as PCM by the
AudioWorklet in tap.js and encoded as WAV in the page, since browsers record webm/opus, which libsndfile cannot
read), and shows the top-k classes as bars, the log-mel and the timeline of what each segment predicts. The server
reads those files from the installed package and serves only them (`PAGE_FILES`): any other path is a 404.

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
import importlib.resources
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
from .cli_help import DefaultsHelpFormatter
from .errors import VitaudioError
from .inference import AudioClassifier, InputError, pipeline
from .plots import figure_png, plot_mel

log = logging.getLogger(__name__)

DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 50.0
DRAIN_SECONDS = 5.0  # how long a refused upload is read and dropped, so the client sees the answer, not a reset
PAGE_FILES = {  # URL path -> (file in vitaudio/page/, Content-Type): the only files the server sends
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/tap.js": ("tap.js", "text/javascript; charset=utf-8"),  # the AudioWorklet processor page.js records with
}


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
    """GET / and the page's files, GET /api/info, POST /api/predict; every error is JSON with a message."""

    server: DemoServer
    server_version = "vitaudio-serve"

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        if path in PAGE_FILES:
            name, content_type = PAGE_FILES[path]
            try:
                self._send(HTTPStatus.OK, page_file(name), content_type)
            except FileNotFoundError:
                log.exception("page file missing")
                self._send_json(HTTPStatus.INTERNAL_SERVER_ERROR, {
                    "error": f"vitaudio/page/{name} is missing from the installed package; reinstall vitaudio"})
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


def page_file(name: str) -> bytes:
    """The bytes of one of the page's files, from the installed package (read on each request: a reload shows
    an edited page without restarting the server)."""
    return (importlib.resources.files("vitaudio") / "page" / name).read_bytes()


def _decoder_says(reason: str) -> str:
    """libsndfile's own words from an AudioDecodeError reason, without the in-memory file's name."""
    reason = re.sub(r"Error opening <[^>]*>: ", "", reason)
    wrapped = re.fullmatch(r"not a readable audio file \((.*)\)", reason)
    return (wrapped.group(1) if wrapped else reason).rstrip(".")


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitaudio.serve", description=__doc__.split("\n\n")[0],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a train.py checkpoint, e.g. runs/x/best.pt")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind: 127.0.0.1 = this computer only; 0.0.0.0 = every interface")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 = any free port")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per clip")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help="largest accepted upload in MB")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the model runs; auto = cuda when present, else cpu")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        clf = pipeline(args.checkpoint, device=args.device)
    except VitaudioError as err:
        print(f"serve: error: {err}", file=sys.stderr)
        return 2
    try:
        server = make_server(clf, args.host, args.port, top_k=args.top_k, max_upload_mb=args.max_upload_mb)
    except OSError as err:
        print(f"serve: error: cannot listen on {args.host}:{args.port}: {err.strerror or err} "
              f"(choose another --port)", file=sys.stderr)
        return 2
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"serve: warning: listening on {args.host}: anyone who can reach this computer can use the page "
              f"(browsers allow recording only on localhost or https)", file=sys.stderr)
    print(f"vitaudio demo: {clf} on {server.url} (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
