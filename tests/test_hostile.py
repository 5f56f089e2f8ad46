"""Hostile clients against a real gunicorn server (gunicorn.conf.py): what only a real server
shows — its own parser's limits, signals and drain, stalled sockets — plus the input cases of
tests/test_hygiene.py once more over the wire."""
import http.client
import json
import socket
import threading
import time
import urllib.request

import pytest

from servers import Server


@pytest.fixture
def server(tiny_weights):
    s = Server(tiny_weights).wait_ready()
    yield s
    s.stop()


def raw(port: int, data: bytes, timeout: float = 10) -> tuple[int, dict, bytes]:
    """Send bytes as they are; -> (status, headers, body) of the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        resp = http.client.HTTPResponse(s)
        resp.begin()
        return resp.status, dict(resp.getheaders()), resp.read()


def post(port: int, path: str, body: bytes | str, headers=None, timeout: float = 30):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    conn.request("POST", path, body=body, headers={"Content-Type": "application/json", **(headers or {})})
    r = conn.getresponse()
    return r.status, r.read()


@pytest.mark.parametrize("body,status", [
    ('[' * 200_000 + ']' * 200_000, 400),                    # nesting past the JSON parser's recursion limit
    ('{"prompt": "\\ud800"}', 422),                           # a lone surrogate
    ('{"temperature": Infinity}', 422), ('{"temperature": 1e999}', 422), ('{"top_p": NaN}', 422),
    ('{"top_k": 1' + '0' * 40 + '}', 422), ('{"seed": 1' + '0' * 5000 + '}', 400),
])
def test_bad_input_over_the_wire_is_a_json_4xx(server, body, status):
    code, data = post(server.port, "/generate", body)
    assert code == status and json.loads(data)["error"]["type"] in ("bad_request", "validation_error")


def test_gunicorns_own_limits_answer_in_our_json_shape(server):
    cases = [(b"GET /health?" + b"a" * 10_000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", 414, "uri_too_long"),
             (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n", 431, "headers_too_large"),
             (b"GET /health HTTP/1.1\r\n" + b"".join(b"X-%d: 1\r\n" % i for i in range(150)) + b"\r\n", 431,
              "headers_too_large"),
             (b"NOT A REQUEST\r\n\r\n", 400, "bad_request")]
    for data, status, kind in cases:
        code, headers, body = raw(server.port, data)
        assert code == status and headers["Content-Type"] == "application/json"
        assert json.loads(body)["error"]["type"] == kind
    assert urllib.request.urlopen(server.base + "/health", timeout=5).status == 200


def test_a_poisonous_neighbour_changes_nobodys_text(server):
    good = [{"prompt": "ab", "max_new_chars": 200, "temperature": 1.0, "seed": i} for i in range(6)]
    alone = [post(server.port, "/generate", json.dumps(b)) for b in good]
    bad = ['{"prompt": "ab", "max_new_chars": 200, "top_k": 1' + '0' * 30 + '}', '{"prompt": "\\udfff"}',
           '{"temperature": 1e-300, "max_new_chars": 200}', '{"repetition_penalty": 1e-300}']
    bodies = [json.dumps(b) for b in good] + bad
    out = [None] * len(bodies)
    start = threading.Barrier(len(bodies))

    def run(i):
        start.wait()
        out[i] = post(server.port, "/generate", bodies[i])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(bodies))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert out[:6] == alone and all(code == 200 for code, _ in alone)
    assert [code for code, _ in out[6:]] == [422, 422, 200, 422]


def test_stalled_clients_below_the_thread_count_leave_the_server_working(tiny_weights):
    """Half-sent requests each hold a thread (docs/serving.md: Limits and failure behaviour); fewer than CHARRNN_HTTP_THREADS
    of them must not block /health or /generate."""
    s = Server(tiny_weights, CHARRNN_HTTP_THREADS="64").wait_ready()
    stalled = []
    try:
        for _ in range(60):
            c = socket.create_connection(("127.0.0.1", s.port), timeout=5)
            c.sendall(b"POST /generate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{")
            stalled.append(c)
        time.sleep(0.5)
        assert urllib.request.urlopen(s.base + "/health", timeout=5).status == 200
        code, body = post(s.port, "/generate", '{"max_new_chars": 20}', timeout=10)
        assert code == 200 and json.loads(body)["completions"][0]["generated_chars"] == 20
    finally:
        for c in stalled:
            c.close()
        s.stop()


def test_sigterm_drains_finishes_in_flight_and_ends_open_streams_with_an_error(tiny_weights):
    s = Server(tiny_weights, CHARRNN_GRACEFUL_TIMEOUT="10", CHARRNN_MAX_NEW_CHARS="100000000",
               CHARRNN_REQUEST_TIMEOUT_S="600").wait_ready()
    try:
        stream = http.client.HTTPConnection("127.0.0.1", s.port, timeout=30)
        stream.request("POST", "/generate", body=json.dumps({"max_new_chars": 100_000_000, "stream": True}),
                       headers={"Content-Type": "application/json"})
        sresp = stream.getresponse()
        assert sresp.status == 200 and sresp.readline().startswith(b"data: ")
        t0 = time.monotonic()  # calibrate: a request in flight at SIGTERM that takes about 2 s
        assert post(s.port, "/generate", json.dumps({"max_new_chars": 2000}))[0] == 200
        n = max(2000, min(1_000_000, int(2000 * 2.0 / (time.monotonic() - t0))))
        in_flight = {}

        def finite():
            in_flight["r"] = post(s.port, "/generate", json.dumps({"max_new_chars": n, "seed": 1}))
        t = threading.Thread(target=finite)
        t.start()
        keep = http.client.HTTPConnection("127.0.0.1", s.port, timeout=10)  # kept alive (for 5 s) across SIGTERM
        keep.request("GET", "/ready")
        assert keep.getresponse().read()
        time.sleep(0.3)
        s.proc.terminate()
        time.sleep(0.5)
        keep.request("GET", "/ready")  # on the kept-alive connection: answered, 503
        r = keep.getresponse()
        assert r.status == 503 and json.loads(r.read())["error"]["type"] == "not_ready"
        t0 = time.monotonic()
        with pytest.raises(OSError):  # a new connection is refused at once, not left hanging
            urllib.request.urlopen(s.base + "/health", timeout=5)
        assert time.monotonic() - t0 < 1
        t.join(20)
        code, body = in_flight["r"]
        assert code == 200 and json.loads(body)["completions"][0]["generated_chars"] == n, body
        tail = sresp.read().decode()  # the stream runs until the engine stops, then says why
        events = [line[6:] for line in tail.splitlines() if line.startswith("data: ")]
        assert events[-1] == "[DONE]"
        err = json.loads(events[-2])["error"]
        assert err["type"] == "shutting_down" and "shutting down" in err["message"]
        out = s.stop()
        assert s.proc.returncode == 0, out[-3000:]
        assert "draining" in out
    finally:
        s.stop()


def test_an_open_server_on_all_interfaces_warns_at_start(tiny_weights):
    s = Server(tiny_weights, HOST="0.0.0.0").wait_ready()
    out = s.stop()
    assert "no API key set" in out
    s = Server(tiny_weights, CHARRNN_API_KEY="k").wait_ready()  # loopback and keyed: quiet
    out = s.stop()
    assert "no API key set" not in out
