"""The demo server under bad input and load: bursts of clients, idle and slow connections, truncated uploads,
non-finite audio, odd query values, foreign Host and Origin headers."""
import http.client
import io
import json
import socket
import threading
import time

import numpy as np
import pytest
import soundfile as sf
from conftest import running

from vitaudio import serve
from vitaudio.inference import AudioClassifier, pipeline


@pytest.fixture(scope="module")
def clf(tiny_run):
    return pipeline(tiny_run / "best.pt", device="cpu")


@pytest.fixture(scope="module")
def server(clf):
    with running(clf) as demo:
        yield demo


def wav_bytes(seconds: float = 1.0, amplitude: float = 0.4, subtype: str = "PCM_16") -> bytes:
    t = np.arange(int(seconds * 22050)) / 22050
    buffer = io.BytesIO()
    sf.write(buffer, amplitude * np.sin(2 * np.pi * 900.0 * t), 22050, format="WAV", subtype=subtype)
    return buffer.getvalue()


def strict_json(body: bytes) -> dict:
    """Parse as JSON proper: NaN and Infinity, which Python's json writes by default, are not JSON."""
    def refuse(constant):
        raise AssertionError(f"{constant} in the answer is not JSON")
    return json.loads(body, parse_constant=refuse)


def call(demo, method: str, path: str, body: bytes | None = None, headers: dict | None = None,
         timeout: float = 60) -> tuple[int, dict, bytes]:
    """One request through http.client (which sends headers and paths as given) -> (status, headers, body)."""
    connection = http.client.HTTPConnection(*demo.server_address[:2], timeout=timeout)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return response.status, dict(response.headers), response.read()
    finally:
        connection.close()


def raw_exchange(demo, head: bytes, body: bytes = b"", half_close: bool = False, timeout: float = 10) -> bytes:
    """Send `head` and `body` over a plain socket (optionally closing the sending side), read until the server
    closes -> everything it sent."""
    with socket.create_connection(demo.server_address[:2], timeout=timeout) as sock:
        sock.sendall(head + body)
        if half_close:
            sock.shutdown(socket.SHUT_WR)
        received = b""
        while chunk := sock.recv(65536):
            received += chunk
        return received


def status_and_json(response: bytes) -> tuple[int, dict]:
    head, _, body = response.partition(b"\r\n\r\n")
    return int(head.split()[1]), strict_json(body)


def test_fifty_simultaneous_uploads_are_all_answered_not_reset(server):
    """A burst of clients used to overflow the standard library's listen backlog of 5 and get resets."""
    clip, n_clients = wav_bytes(seconds=0.5), 50
    start = threading.Barrier(n_clients)
    statuses: list = [None] * n_clients

    def client(i):
        start.wait()
        try:
            statuses[i] = call(server, "POST", "/api/predict?top_k=1", clip, timeout=120)[0]
        except OSError as err:
            statuses[i] = repr(err)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(n_clients)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=180)
    assert statuses == [200] * n_clients


def test_an_idle_connection_is_closed_after_the_timeout(clf):
    """A client that connects and sends nothing used to hold its thread forever."""
    with running(clf, timeout=0.5) as demo:
        with socket.create_connection(demo.server_address[:2], timeout=10) as sock:
            start = time.monotonic()
            assert sock.recv(1) == b""  # closed by the server; a timeout here would raise
            assert time.monotonic() - start < 8


def test_a_stalled_upload_is_answered_408_after_the_timeout(clf):
    """A client that stops sending halfway through its body (without closing) used to hold its thread forever."""
    clip = wav_bytes()
    with running(clf, timeout=0.5) as demo:
        head = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(clip)}\r\n\r\n".encode()
        with socket.create_connection(demo.server_address[:2], timeout=10) as sock:
            sock.sendall(head + clip[:len(clip) // 2])
            received = b""
            while chunk := sock.recv(65536):
                received += chunk
    status, answer = status_and_json(received)
    assert status == 408 and "stalled" in answer["error"]


def test_connections_beyond_the_cap_wait_for_a_free_slot_instead_of_a_thread_each(clf):
    """Each connection used to get its own thread, however many there were: now at most `max_connections` are
    served at once, and the next client is served once one of them closes."""
    with running(clf, timeout=1.0, max_connections=2) as demo:
        idle = [socket.create_connection(demo.server_address[:2], timeout=10) for _ in range(2)]
        try:
            time.sleep(0.2)  # both accepted and holding their slots
            start = time.monotonic()
            status, _, body = call(demo, "GET", "/api/info", timeout=30)
            waited = time.monotonic() - start
        finally:
            for sock in idle:
                sock.close()
    assert status == 200 and strict_json(body)["classes"]
    assert waited >= 0.5  # it was not served until an idle connection timed out


def test_a_truncated_upload_is_refused_not_classified(server):
    """A client that half-closes after a quarter of its Content-Length used to have the quarter classified."""
    clip = wav_bytes(seconds=2.0)
    head = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {len(clip)}\r\n\r\n".encode()
    status, answer = status_and_json(raw_exchange(server, head, clip[:len(clip) // 4], half_close=True))
    assert status == 400 and answer["error"].startswith(f"truncated upload: {len(clip) // 4} of the {len(clip)}")


def test_huge_finite_float_samples_are_refused_with_a_reason_not_answered_with_nan(server):
    """A float WAV with samples near 3e38 used to give NaN scores, sent as `NaN`, which is not JSON."""
    status, _, body = call(server, "POST", "/api/predict", wav_bytes(amplitude=3e38, subtype="FLOAT"))
    answer = strict_json(body)
    assert status == 400 and "not finite" in answer["error"] and "[-1, 1]" in answer["error"]


def test_non_finite_model_scores_are_refused_with_a_reason(server, monkeypatch):
    """Whatever makes the model's scores NaN, the answer is a 400 in valid JSON, not `NaN` in the body."""
    real_call = AudioClassifier.__call__

    def nan_scores(self, *args, **kwargs):
        result = real_call(self, *args, **kwargs)
        result["predictions"][0]["score"] = float("nan")
        return result

    monkeypatch.setattr(AudioClassifier, "__call__", nan_scores)
    status, _, body = call(server, "POST", "/api/predict", wav_bytes())
    assert status == 400 and "not finite" in strict_json(body)["error"]


def test_every_answer_is_strict_json_even_one_holding_nan(server, monkeypatch):
    """The last guard: an answer with a non-finite number becomes a 500 in valid JSON."""
    monkeypatch.setattr(serve.DemoServer, "info", lambda self: {"score": float("inf")})
    status, _, body = call(server, "GET", "/api/info")
    assert status == 500 and "non-finite" in strict_json(body)["error"]


@pytest.mark.parametrize("query", ["top_k=%C2%B2", "top_k=%D9%A3", "top_k=" + "9" * 5000, "top_k=-1", "top_k=1.5"])
def test_a_top_k_that_is_not_ascii_digits_is_a_400_not_a_500(server, query):
    """`?top_k=²` used to pass str.isdigit and crash int() with a 500; so did a number of 5,000 digits."""
    status, _, body = call(server, "POST", "/api/predict?" + query, wav_bytes(seconds=0.5))
    assert status == 400 and "top_k must be a whole number" in strict_json(body)["error"]


@pytest.mark.parametrize("length", ["\u00b2", "1e3", " 12", "9" * 30])
def test_a_content_length_that_is_not_ascii_digits_is_a_400_not_a_500(server, length):
    head = f"POST /api/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Length: {length}\r\n\r\n".encode("latin-1")
    status, answer = status_and_json(raw_exchange(server, head, b"RIFF", half_close=True))
    assert status == 400 and "Content-Length" in answer["error"]


def test_a_clip_longer_than_max_seconds_is_refused_with_a_reason(clf):
    """A small upload can decode to hours of audio: the decoded duration has a limit of its own."""
    with running(clf, max_seconds=1.5) as demo:
        status, _, body = call(demo, "POST", "/api/predict", wav_bytes(seconds=2.0))
        assert status == 413 and "2.0 s of audio" in strict_json(body)["error"]
        assert "--max-seconds" in strict_json(body)["error"]
        assert call(demo, "POST", "/api/predict", wav_bytes(seconds=1.0))[0] == 200


@pytest.mark.parametrize("path", ["/", "/page.js", "/api/info", "/nothing"])
def test_responses_carry_security_headers_and_hide_the_python_version(server, path):
    status, headers, _ = call(server, "GET", path)
    assert headers["Server"] == "vitaudio-serve" and "Python" not in str(headers)
    assert headers["X-Content-Type-Options"] == "nosniff" and headers["X-Frame-Options"] == "DENY"
    policy = headers["Content-Security-Policy"]
    assert "default-src 'none'" in policy and "script-src 'self';" in policy and "frame-ancestors 'none'" in policy
    assert "unsafe-inline" not in policy and "unsafe-eval" not in policy


def test_the_standard_librarys_own_refusals_are_json_with_the_same_headers(server):
    status, headers, body = call(server, "PUT", "/api/predict", b"x")
    assert status == 501 and "error" in strict_json(body) and headers["X-Frame-Options"] == "DENY"
    assert headers["Server"] == "vitaudio-serve"


@pytest.mark.parametrize("host", ["evil.example", "evil.example:{port}", "127.0.0.1.evil.example:{port}",
                                  "localhost.evil.example"])
def test_a_foreign_host_header_is_refused_against_dns_rebinding(server, host):
    """Any Host used to be served, so a page whose name was pointed at 127.0.0.1 could read and post."""
    host = host.format(port=server.server_address[1])
    for method, body in (("GET", None), ("POST", wav_bytes(seconds=0.5))):
        status, _, answer = call(server, method, "/api/info" if body is None else "/api/predict", body,
                                 headers={"Host": host})
        assert status == 403 and "--allowed-host" in strict_json(answer)["error"]


@pytest.mark.parametrize("host", ["localhost:{port}", "127.0.0.1:{port}", "[::1]:{port}", "LocalHost", "127.0.0.1"])
def test_local_host_names_are_served(server, host):
    status, _, _ = call(server, "GET", "/api/info", headers={"Host": host.format(port=server.server_address[1])})
    assert status == 200


def test_allowed_host_adds_a_name_to_serve(clf):
    with running(clf, allowed_hosts=("demo.lan",)) as demo:
        assert call(demo, "GET", "/", headers={"Host": f"demo.lan:{demo.server_address[1]}"})[0] == 200
        assert call(demo, "GET", "/", headers={"Host": "other.lan"})[0] == 403


@pytest.mark.parametrize("origin", ["http://evil.example", "null", "https://127.0.0.1:{port}",
                                    "http://127.0.0.1:1"])
def test_a_cross_origin_upload_is_refused(server, origin):
    """Another site's page could post clips (a form post needs no preflight); only the server's own page may."""
    origin = origin.format(port=server.server_address[1])
    status, headers, body = call(server, "POST", "/api/predict", wav_bytes(seconds=0.5), headers={"Origin": origin})
    assert status == 403 and "--allow-origin" in strict_json(body)["error"]
    assert "Access-Control-Allow-Origin" not in headers


def test_the_servers_own_page_may_post(server):
    host = f"127.0.0.1:{server.server_address[1]}"
    status, _, _ = call(server, "POST", "/api/predict", wav_bytes(seconds=0.5),
                        headers={"Host": host, "Origin": f"http://{host}"})
    assert status == 200


def test_allow_origin_accepts_that_origins_uploads_and_preflight_with_cors_headers(clf):
    origin = "http://app.example:8000"
    with running(clf, allowed_origins=(origin,)) as demo:
        status, headers, _ = call(demo, "POST", "/api/predict", wav_bytes(seconds=0.5), headers={"Origin": origin})
        assert status == 200 and headers["Access-Control-Allow-Origin"] == origin
        status, headers, _ = call(demo, "OPTIONS", "/api/predict",
                                  headers={"Origin": origin, "Access-Control-Request-Method": "POST"})
        assert status == 204 and headers["Access-Control-Allow-Origin"] == origin
        assert "POST" in headers["Access-Control-Allow-Methods"]
        status, headers, _ = call(demo, "OPTIONS", "/api/predict", headers={"Origin": "http://evil.example"})
        assert status == 403 and "Access-Control-Allow-Origin" not in headers
