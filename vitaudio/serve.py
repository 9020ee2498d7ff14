"""`python -m vitaudio.serve CHECKPOINT [--host 127.0.0.1] [--port 7860]`: a local demo page and a JSON API.

The page (vitaudio/page/: index.html, page.css, page.js and tap.js, nothing loaded from elsewhere, no inline script)
takes an audio file, or a recording from the microphone where the browser allows it (captured as PCM by the
AudioWorklet in tap.js and encoded as WAV in the page, since browsers record webm/opus, which libsndfile cannot
read), and shows the top-k classes as bars, the log-mel and the timeline of what each segment predicts (a
multi-label tagger's tags, the labels past their thresholds, highlighted, and a timeline row per tag). The server
reads those files from the installed package and serves only them (`PAGE_FILES`): any other path is a 404.

API, for programs: `POST /api/predict` with an audio file as the raw body (any Content-Type) or as the first file
of a multipart/form-data body (`?top_k=N` optional), e.g. `curl --data-binary @song.wav URL/api/predict` or
`curl -F file=@song.wav URL/api/predict`. Answers JSON `{"predictions": [{"label", "score"}], "segments":
[{"start", "end", "predictions"}], "duration": seconds, "mel_png": "data:image/png;base64,..."}`; a tagger's
predictions are `{"label", "score", "tagged"}`: sigmoid scores, every tagged label and the others up to top_k.
Errors are `{"error": message}` with 400 (not audio, silent, non-finite features, truncated upload, bad query), 403
(a Host or cross-origin Origin the server does not serve), 408 (upload stalled), 411 (no Content-Length), 413
(larger than --max-upload-mb, or longer than --max-seconds). `GET /api/info` describes the model and the limits:
its classes and "task", "single_label" or "multi_label" (a tagger, whose "pooling" of segment logits and per-class
"thresholds" it gives too).

Standard library only (http.server): no extra dependency, no analytics, nothing that reaches the network. It binds
127.0.0.1 unless told otherwise; it is a demo server, not one to expose to the internet. Still, it holds up to
what a browser page or a busy client can send: connections are capped and time out, requests naming another
Host (DNS rebinding) or posted from another site's page are refused, and every answer is strict JSON.
"""
from __future__ import annotations

import argparse
import base64
import importlib.resources
import json
import logging
import math
import re
import socket
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from email.message import Message
from email.parser import BytesHeaderParser
from email.policy import HTTP
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import numpy as np

from .audio import AudioDecodeError, audio_info, load_audio
from .cli_help import DefaultsHelpFormatter
from .errors import VitaudioError
from .inference import AudioClassifier, InputError, pipeline
from .plots import figure_png, plot_mel

log = logging.getLogger(__name__)

DEFAULT_PORT = 7860
DEFAULT_MAX_UPLOAD_MB = 50.0
# Scoring a clip holds up to ~1 MB per second of audio at its peak (a 48 kHz stereo file decoded to float32, its
# mono mix and resampling, then the STFT's complex bins): a 10-minute 48 kHz stereo FLAC adds ~0.5 GB to the peak.
DEFAULT_MAX_SECONDS = 600.0
DEFAULT_TIMEOUT = 30.0  # seconds a connection may stay silent before the server closes it
DEFAULT_MAX_CONNECTIONS = 64  # connections served at once; later ones wait in the listen queue, not refused
LISTEN_BACKLOG = 128  # the standard library's 5 resets clients that connect in a burst
MIN_UPLOAD_BYTES_PER_S = 20_000  # an upload slower than this on average is a stalled client holding a connection
DRAIN_SECONDS = 5.0  # how long a refused upload is read and dropped, so the client sees the answer, not a reset
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
CONTENT_SECURITY_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
                           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")
SECURITY_HEADERS = {"Content-Security-Policy": CONTENT_SECURITY_POLICY, "X-Content-Type-Options": "nosniff",
                    "X-Frame-Options": "DENY", "Referrer-Policy": "no-referrer", "Cache-Control": "no-store"}
PAGE_FILES = {  # URL path -> (file in vitaudio/page/, Content-Type): the only files the server sends
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/tap.js": ("tap.js", "text/javascript; charset=utf-8"),  # the AudioWorklet processor page.js records with
}
PREDICT_PATH = "/api/predict"


class UploadError(Exception):
    """A request the server refuses: HTTP status and a message for the person or program that sent it."""

    def __init__(self, status: HTTPStatus, message: str):
        super().__init__(message)
        self.status, self.message = status, message


class DemoServer(ThreadingHTTPServer):
    """An HTTP server around one AudioClassifier: at most `max_connections` connections are served at once, each
    in its own thread, and the model (with decoding and plotting) runs one clip at a time."""

    daemon_threads = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, address: tuple[str, int], clf: AudioClassifier, *, top_k: int = 5,
                 max_upload_bytes: int = int(DEFAULT_MAX_UPLOAD_MB * 1e6), max_seconds: float = DEFAULT_MAX_SECONDS,
                 timeout: float = DEFAULT_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                 allowed_hosts: tuple[str, ...] = (), allowed_origins: tuple[str, ...] = ()):
        if max_connections < 1 or timeout <= 0 or max_seconds <= 0:
            raise ValueError(f"need max_connections >= 1, timeout > 0 and max_seconds > 0, got {max_connections}, "
                             f"{timeout} and {max_seconds}")
        super().__init__(address, DemoHandler)
        self.clf, self.top_k, self.max_upload_bytes = clf, top_k, max_upload_bytes
        self.max_seconds, self.connection_timeout = max_seconds, timeout
        self.allowed_hosts = {_host_name(host) for host in (*LOCAL_HOSTS, address[0], self.server_address[0],
                                                            *allowed_hosts) if host}
        self.allowed_origins = {origin.rstrip("/").lower() for origin in allowed_origins}
        # decoding, the model and matplotlib run in one worker thread, one clip at a time: two cores gain nothing
        # from two clips at once, and the clip's large arrays all come from that thread's malloc arena, so peak
        # memory stays that of one clip however many clients wait (each thread that decodes grows an arena of its
        # own that keeps its peak)
        self._scorer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="vitaudio-scorer")
        self._slots = threading.BoundedSemaphore(max_connections)
        self._stopping = False

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{'127.0.0.1' if host in ('0.0.0.0', '') else host}:{port}/"

    def info(self) -> dict:
        clf = self.clf
        return {"classes": clf.classes, "sample_rate": clf.sample_rate, "top_k": self.top_k,
                "task": clf.task, "pooling": clf.pooling,
                "thresholds": clf.thresholds,  # None for a single-label classifier
                "segment_seconds": round(clf.segment_rule.frames / clf.mel_config.frames_per_second, 3),
                "max_upload_bytes": self.max_upload_bytes, "max_upload_mb": _megabytes(self.max_upload_bytes),
                "max_seconds": self.max_seconds}

    def origin_listed(self, origin: str) -> bool:
        """Whether --allow-origin names `origin` (or is *)."""
        return origin.rstrip("/").lower() in self.allowed_origins or "*" in self.allowed_origins

    def process_request(self, request: socket.socket, client_address) -> None:
        """Serve the connection in a thread once one of the `max_connections` slots is free; until then the accept
        loop waits and new clients queue in the kernel's listen backlog."""
        while not self._slots.acquire(timeout=0.2):
            if self._stopping:
                self.shutdown_request(request)
                return
        try:
            threading.Thread(target=self._serve_in_slot, args=(request, client_address), daemon=True).start()
        except RuntimeError:  # the system refused a thread: drop this client, keep the slot and keep serving
            log.exception("cannot start a thread for %s", client_address[0])
            self._slots.release()
            self.shutdown_request(request)

    def _serve_in_slot(self, request: socket.socket, client_address) -> None:
        try:
            self.process_request_thread(request, client_address)
        finally:
            self._slots.release()

    def shutdown(self) -> None:
        self._stopping = True  # frees an accept loop waiting for a slot, so serve_forever can return
        super().shutdown()

    def handle_error(self, request, client_address) -> None:
        error = sys.exc_info()[1]
        if isinstance(error, (ConnectionError, TimeoutError)):  # a client that left or stalled: not a bug
            log.info("%s: %s", client_address[0], error)
        else:
            log.exception("error while serving %s", client_address[0])

    def server_close(self) -> None:
        super().server_close()
        self._scorer.shutdown(wait=False, cancel_futures=True)

    def predict(self, body: bytes, top_k: int) -> dict:
        """The bytes of an audio file -> the API's JSON answer; UploadError for what cannot be classified."""
        if not body:
            raise UploadError(HTTPStatus.BAD_REQUEST, "empty upload: send the bytes of an audio file as the body")
        info = audio_info(body)  # before decoding: a 50 MB MP3 decodes to hours of samples
        self._check_duration(info and info[1])
        return self._scorer.submit(self._score, body, top_k).result()

    def _score(self, body: bytes, top_k: int) -> dict:
        """Decode, score and plot one upload, in the scorer thread."""
        clf = self.clf
        try:
            samples = load_audio(body, clf.sample_rate)
        except AudioDecodeError as err:
            raise UploadError(HTTPStatus.BAD_REQUEST, f"not an audio file libsndfile can read: "
                                                      f"{_decoder_says(err.reason)}; send WAV, FLAC, OGG/Opus, "
                                                      f"AIFF or MP3") from None
        duration = len(samples) / clf.sample_rate
        self._check_duration(duration)  # a header may not know (or may understate) the length
        try:
            mel_db = clf.mel_db(samples)
        except InputError as err:  # e.g. silence; the message starts with "input 0: "
            raise UploadError(HTTPStatus.BAD_REQUEST, str(err).split(": ", 1)[-1]) from None
        if not np.isfinite(mel_db).all():  # finite samples whose squares overflow float32 (|x| > ~1e19)
            raise UploadError(HTTPStatus.BAD_REQUEST, f"the clip's features are not finite: its samples reach "
                                                      f"{float(np.abs(samples).max()):.3g}, too large to square "
                                                      f"in 32-bit floats; scale the audio to [-1, 1]")
        result = clf(clf.prepare_mel(mel_db, duration=duration), top_k=top_k, return_segments=True)
        scores = [p["score"] for p in result["predictions"]]
        scores += [p["score"] for segment in result["segments"] for p in segment["predictions"]]
        if not all(math.isfinite(score) for score in scores):
            raise UploadError(HTTPStatus.BAD_REQUEST, "the model's scores for this clip are not finite "
                                                      "(NaN or infinite); the clip cannot be classified")
        png = figure_png(plot_mel(mel_db, clf.mel_config))
        return {**result, "duration": round(duration, 3),
                "mel_png": "data:image/png;base64," + base64.b64encode(png).decode("ascii")}

    def _check_duration(self, seconds: float | None) -> None:
        if seconds is not None and seconds > self.max_seconds:
            raise UploadError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"clip too long: {seconds:.1f} s of audio, this server takes up to {self.max_seconds:g} "
                              f"s (--max-seconds); send a shorter clip")


class DemoHandler(BaseHTTPRequestHandler):
    """GET / and the page's files, GET /api/info, POST /api/predict; every answer is JSON or a page file, with the
    security headers; each connection answers one request, then closes."""

    server: DemoServer
    server_version = "vitaudio-serve"
    protocol_version = "HTTP/1.1"  # for `Expect: 100-continue` (curl sends it with larger uploads); no keep-alive

    def setup(self) -> None:
        self.timeout = self.server.connection_timeout  # StreamRequestHandler.setup applies it to the socket
        self.body_read = False
        super().setup()

    def version_string(self) -> str:
        return self.server_version  # not the Python version the standard library appends

    def do_GET(self) -> None:
        path = urlsplit(self.path).path
        try:
            self._check_host()
        except UploadError as err:
            self._send_json(err.status, {"error": err.message})
            return
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

    def do_OPTIONS(self) -> None:
        """A CORS preflight: answered for the origins --allow-origin names, refused for any other."""
        try:
            self._check_host()
            self._check_origin()
            if "Origin" not in self.headers:
                raise UploadError(HTTPStatus.BAD_REQUEST, "OPTIONS is only answered as a CORS preflight")
        except UploadError as err:
            self._send_json(err.status, {"error": err.message})
            return
        self._send(HTTPStatus.NO_CONTENT, b"", None, {"Access-Control-Allow-Methods": "POST",
                                                      "Access-Control-Allow-Headers": "Content-Type",
                                                      "Access-Control-Max-Age": "600"})

    def do_POST(self) -> None:
        start = time.perf_counter()
        try:
            top_k, length = self._admit()
            body = _upload(self._read_body(length), self.headers.get("Content-Type", ""))
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
                 1000 * (time.perf_counter() - start), _headline(answer["predictions"]))
        self._send_json(HTTPStatus.OK, answer)

    def handle_expect_100(self) -> bool:
        """Refuse before the client sends the body when the headers already say the upload will be refused."""
        if self.command == "POST":
            try:
                self._admit()
            except UploadError as err:
                self.body_read = True  # nothing was sent: there is nothing to drain
                self._send_json(err.status, {"error": err.message})
                return False
        return super().handle_expect_100()

    def send_error(self, code: int, message: str | None = None, explain: str | None = None) -> None:
        """The standard library's own refusals (bad request line, unknown method, ...) as JSON too."""
        status = HTTPStatus(code)
        self._send_json(status, {"error": message or status.phrase})

    def _admit(self) -> tuple[int, int]:
        """Check what the headers and URL of a POST say -> (top_k, Content-Length); UploadError otherwise."""
        url = urlsplit(self.path)
        self._check_host()
        self._check_origin()
        if url.path != PREDICT_PATH:
            raise UploadError(HTTPStatus.NOT_FOUND, f"no such endpoint: POST {url.path} (use {PREDICT_PATH})")
        top_k = self._top_k(parse_qs(url.query))
        length = self.headers.get("Content-Length")
        if length is None:
            raise UploadError(HTTPStatus.LENGTH_REQUIRED, "send a Content-Length header with the upload")
        n_bytes = _whole_number(length)
        if n_bytes is None:
            raise UploadError(HTTPStatus.BAD_REQUEST, f"bad Content-Length {length!r}")
        limit = self.server.max_upload_bytes
        if n_bytes > limit:
            raise UploadError(HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                              f"upload larger than {_megabytes(limit)} MB ({_megabytes(n_bytes)} MB sent); "
                              f"send a shorter clip")
        return top_k, n_bytes

    def _check_host(self) -> None:
        """Refuse a Host the server is not known by: a page on another site whose name was pointed at this
        address (DNS rebinding) would otherwise read and post as if it were the page."""
        host = self.headers.get("Host")
        if host is not None and _host_name(host) not in self.server.allowed_hosts:
            raise UploadError(HTTPStatus.FORBIDDEN, f"this server does not answer to Host {host!r}; open it as "
                                                    f"{self.server.url}, or start it with --allowed-host NAME")

    def _check_origin(self) -> None:
        """Refuse an upload posted from another site's page unless --allow-origin names that site."""
        origin = self.headers.get("Origin")
        if origin is None or self._origin_allowed(origin):
            return
        raise UploadError(HTTPStatus.FORBIDDEN, f"cross-origin request from {origin!r} refused; start the server "
                                                f"with --allow-origin {origin} to accept it")

    def _origin_allowed(self, origin: str) -> bool:
        own = f"http://{self.headers.get('Host', '')}".lower()
        return origin.rstrip("/").lower() == own or self.server.origin_listed(origin)

    def _top_k(self, query: dict[str, list[str]]) -> int:
        if "top_k" not in query:
            return self.server.top_k
        value = query["top_k"][0]
        top_k = _whole_number(value)
        if top_k is None or top_k < 1:
            raise UploadError(HTTPStatus.BAD_REQUEST, f"top_k must be a whole number >= 1, got {value!r}")
        return top_k

    def _read_body(self, length: int) -> bytes:
        """Exactly `length` bytes of body; UploadError when the client sends fewer, or sends them too slowly."""
        self.body_read = True
        deadline = time.monotonic() + self.server.connection_timeout + length / MIN_UPLOAD_BYTES_PER_S
        chunks, remaining = [], length
        try:
            while remaining > 0:
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:
                    raise UploadError(HTTPStatus.BAD_REQUEST,
                                      f"truncated upload: {length - remaining} of the {length} bytes Content-Length "
                                      f"announced arrived before the client stopped sending")
                chunks.append(chunk)
                remaining -= len(chunk)
                if remaining and time.monotonic() > deadline:
                    raise TimeoutError
        except TimeoutError:
            raise UploadError(HTTPStatus.REQUEST_TIMEOUT,
                              f"upload stalled: {length - remaining} of {length} bytes arrived in time") from None
        return b"".join(chunks)

    def _drain(self) -> None:
        """Read and drop, for a while, the body of an upload refused before it was read: closing a socket with
        unread data makes the kernel send a reset, and the client would see that instead of the message."""
        remaining = _whole_number(self.headers.get("Content-Length", ""))
        if self.body_read or remaining is None:
            return
        deadline = time.monotonic() + DRAIN_SECONDS
        self.connection.settimeout(DRAIN_SECONDS)
        try:
            while remaining > 0 and time.monotonic() < deadline:
                chunk = self.rfile.read1(min(remaining, 1 << 16))
                if not chunk:
                    break
                remaining -= len(chunk)
        except OSError:  # the client gave up, or the time ran out
            pass

    def _send_json(self, status: HTTPStatus, payload: dict) -> None:
        try:
            body = json.dumps(payload, allow_nan=False).encode()  # NaN and Infinity are not JSON
        except ValueError:
            log.exception("a non-finite number in an answer")
            status = HTTPStatus.INTERNAL_SERVER_ERROR
            body = json.dumps({"error": "internal error: the answer held a non-finite number"}).encode()
        self._send(status, body, "application/json")

    def _send(self, status: HTTPStatus, body: bytes, content_type: str | None,
              extra_headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        if content_type:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for name, value in SECURITY_HEADERS.items():
            self.send_header(name, value)
        headers = getattr(self, "headers", None)  # absent when the request line itself was refused
        origin = headers.get("Origin") if headers is not None else None
        if origin is not None and self.server.origin_listed(origin):  # CORS, so that page may read the answer
            self.send_header("Access-Control-Allow-Origin", origin)
            self.send_header("Vary", "Origin")
        for name, value in (extra_headers or {}).items():
            self.send_header(name, value)
        self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def log_message(self, fmt: str, *args) -> None:
        log.info("%s %s", self.address_string(), fmt % args)


def make_server(clf: AudioClassifier, host: str = "127.0.0.1", port: int = DEFAULT_PORT, *, top_k: int = 5,
                max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, max_seconds: float = DEFAULT_MAX_SECONDS,
                timeout: float = DEFAULT_TIMEOUT, max_connections: int = DEFAULT_MAX_CONNECTIONS,
                allowed_hosts: tuple[str, ...] = (), allowed_origins: tuple[str, ...] = ()) -> DemoServer:
    """A bound, not yet serving, DemoServer (port 0 = any free port; see `server.url`)."""
    return DemoServer((host, port), clf, top_k=top_k, max_upload_bytes=int(max_upload_mb * 1e6),
                      max_seconds=max_seconds, timeout=timeout, max_connections=max_connections,
                      allowed_hosts=tuple(allowed_hosts), allowed_origins=tuple(allowed_origins))


def page_file(name: str) -> bytes:
    """The bytes of one of the page's files, from the installed package (read on each request: a reload shows
    an edited page without restarting the server)."""
    return (importlib.resources.files("vitaudio") / "page" / name).read_bytes()


def multipart_file(body: bytes, content_type: str) -> bytes:
    """The content of the first file part of a multipart/form-data body (what `curl -F file=@clip.wav` sends);
    UploadError when the body has none."""
    header = Message(policy=HTTP)
    header["Content-Type"] = content_type
    boundary = header.get_param("boundary")
    if not isinstance(boundary, str) or not 1 <= len(boundary) <= 70:
        raise UploadError(HTTPStatus.BAD_REQUEST, "multipart/form-data upload without a valid boundary parameter")
    delimiter = b"\r\n--" + boundary.encode("latin-1")
    body = b"\r\n" + body  # the first delimiter has no line break before it
    start = body.find(delimiter)
    while start >= 0:
        start += len(delimiter)
        line_end = body.find(b"\r\n", start)  # the delimiter line may end in spaces ("transport padding")
        if body[start:start + 2] == b"--" or line_end < 0:  # the closing delimiter, or a cut-off body
            break
        headers_end = body.find(b"\r\n\r\n", line_end)  # == line_end for a part without headers
        end = body.find(delimiter, headers_end + 2) if headers_end >= 0 else -1
        if end < 0:
            break
        part = BytesHeaderParser(policy=HTTP).parsebytes(body[line_end + 2:headers_end + 4])
        if part.get_filename() is not None:  # the first file part; form fields have no filename
            return body[headers_end + 4:end] if end >= headers_end + 4 else b""
        start = end
    raise UploadError(HTTPStatus.BAD_REQUEST, "multipart/form-data upload without a complete file part: "
                                              "send the clip as a file, e.g. curl -F file=@clip.wav")


def _upload(body: bytes, content_type: str) -> bytes:
    """The audio file in a request body: the first file of a multipart form, else the body as it is."""
    if content_type.split(";", 1)[0].strip().lower() == "multipart/form-data":
        return multipart_file(body, content_type)
    return body


def _host_name(host: str) -> str:
    """A Host header's (or an address's) name, lower case, without its port or IPv6 brackets."""
    host = host.strip().lower()
    if host.startswith("["):
        return host[1:].split("]", 1)[0]
    name, colon, port = host.rpartition(":")
    return name if colon and port.isdigit() and ":" not in name else host


def _whole_number(text: str) -> int | None:
    """A non-negative integer written in ASCII digits (str.isdigit also accepts "²", which int() refuses), else
    None; at most 18 digits, so int() never meets its limit on digits."""
    return int(text) if re.fullmatch(r"[0-9]{1,18}", text) else None


def _decoder_says(reason: str) -> str:
    """libsndfile's own words from an AudioDecodeError reason, without the in-memory file's name."""
    reason = re.sub(r"Error opening <[^>]*>: ", "", reason)
    wrapped = re.fullmatch(r"not a readable audio file \((.*)\)", reason)
    return (wrapped.group(1) if wrapped else reason).rstrip(".")


def _headline(predictions: list[dict]) -> str:
    """What the log says a clip is: a tagger's tagged labels, else the top label."""
    if "tagged" in predictions[0]:
        return "+".join(p["label"] for p in predictions if p["tagged"]) or "no tag"
    return predictions[0]["label"]


def _megabytes(n_bytes: int) -> str:
    return f"{n_bytes / 1e6:.3g}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m vitaudio.serve", description=__doc__.split("\n\n")[0],
                                     formatter_class=DefaultsHelpFormatter)
    parser.add_argument("checkpoint", type=Path, help="a train.py checkpoint, e.g. runs/x/best.pt, or a model "
                                                      "folder of model.safetensors and config.json")
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind: 127.0.0.1 = this computer only; 0.0.0.0 = every interface")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="port to listen on; 0 = any free port")
    parser.add_argument("--top-k", type=int, default=5, help="classes shown per clip")
    parser.add_argument("--max-upload-mb", type=float, default=DEFAULT_MAX_UPLOAD_MB,
                        help="largest accepted upload in MB")
    parser.add_argument("--max-seconds", type=float, default=DEFAULT_MAX_SECONDS,
                        help="longest accepted clip, in seconds of decoded audio (a compressed upload can decode to "
                             "hours); scoring holds about 1 MB of memory per second of audio")
    parser.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT,
                        help="seconds a connection may stay silent before it is closed")
    parser.add_argument("--max-connections", type=int, default=DEFAULT_MAX_CONNECTIONS,
                        help="connections served at once; more wait in the listen queue")
    parser.add_argument("--allowed-host", action="append", default=[], metavar="NAME",
                        help="also answer requests whose Host is NAME (repeatable); localhost, 127.0.0.1, [::1] "
                             "and the --host address always are")
    parser.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                        help="accept uploads from pages of ORIGIN, e.g. http://app.example:8000 (repeatable; * = "
                             "any); by default only the server's own page may post")
    parser.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto",
                        help="where the model runs; auto = cuda when present, else cpu")
    args = parser.parse_args(argv)
    if args.max_seconds <= 0 or args.timeout <= 0 or args.max_connections < 1:
        print("serve: error: --max-seconds and --timeout must be > 0 and --max-connections >= 1", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    try:
        clf = pipeline(args.checkpoint, device=args.device)
    except VitaudioError as err:
        print(f"serve: error: {err}", file=sys.stderr)
        return 2
    try:
        server = make_server(clf, args.host, args.port, top_k=args.top_k, max_upload_mb=args.max_upload_mb,
                             max_seconds=args.max_seconds, timeout=args.timeout, max_connections=args.max_connections,
                             allowed_hosts=tuple(args.allowed_host), allowed_origins=tuple(args.allow_origin))
    except OSError as err:
        print(f"serve: error: cannot listen on {args.host}:{args.port}: {err.strerror or err} "
              f"(choose another --port)", file=sys.stderr)
        return 2
    if args.host not in LOCAL_HOSTS:
        print(f"serve: warning: listening on {args.host}: anyone who can reach this computer can use the page "
              f"(browsers allow recording only on localhost or https); name the address they use with "
              f"--allowed-host", file=sys.stderr)
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
