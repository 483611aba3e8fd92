"""IMDSv2 identity: token first, short timeouts, nothing but validated values, fast off EC2."""
from __future__ import annotations

import http.server
import threading

import pytest

from efajob.node.imds import fetch_identity

GOOD = {"instance-id": b"i-0123456789abcdef0", "instance-type": b"p5.48xlarge",
        "placement/region": b"us-east-2"}


class FakeIMDS:
    def __init__(self, answers=GOOD, token_ok=True):
        self.answers, self.token_ok, self.requests = answers, token_ok, []

    def __call__(self, req, timeout):
        self.requests.append((req.get_method(), req.full_url, dict(req.header_items()), timeout))
        path = req.full_url.split("/latest/", 1)[1]
        if path == "api/token":
            if not self.token_ok:
                raise OSError("timed out")
            return b"TOKEN"
        if path.startswith("meta-data/"):
            key = path[len("meta-data/"):]
            if key in self.answers:
                return self.answers[key]
        raise OSError("404")


def test_token_then_metadata_with_short_timeouts():
    fake = FakeIMDS()
    got = fetch_identity("http://imds", opener=fake, timeout=0.2, env={})
    assert got == {"instance_id": "i-0123456789abcdef0", "instance_type": "p5.48xlarge",
                   "region": "us-east-2"}
    method, url, headers, timeout = fake.requests[0]
    assert (method, url) == ("PUT", "http://imds/latest/api/token")
    assert "X-aws-ec2-metadata-token-ttl-seconds" in headers
    assert all(r[2].get("X-aws-ec2-metadata-token") == "TOKEN" for r in fake.requests[1:])
    assert all(r[3] == 0.2 for r in fake.requests)


def test_no_token_means_not_ec2_and_nothing_else_is_tried():
    fake = FakeIMDS(token_ok=False)
    assert fetch_identity("http://imds", opener=fake, env={}) == {}
    assert len(fake.requests) == 1


def test_bad_values_are_ignored_and_missing_ones_left_out():
    fake = FakeIMDS({"instance-id": b"i-0123456789abcdef0\n", "instance-type": b"<html>",
                     "placement/region": b"us-east-1; rm -rf /"})
    assert fetch_identity("http://imds", opener=fake, env={}) == {
        "instance_id": "i-0123456789abcdef0"}


def test_disabled_by_environment():
    fake = FakeIMDS()
    assert fetch_identity("http://imds", opener=fake,
                          env={"AWS_EC2_METADATA_DISABLED": "true"}) == {}
    assert fake.requests == []


def test_nothing_listening_returns_fast():
    """Through the real opener: a refused token request is the only request made, with the
    short timeout (what makes it fast off EC2; how fast is the machine's business)."""
    import socket

    from efajob.node.imds import _default_opener

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: connection refused
    real, calls = _default_opener(), []

    def counting(req, timeout):
        calls.append((req.get_method(), req.full_url, timeout))
        return real(req, timeout)

    assert fetch_identity(f"http://127.0.0.1:{port}", timeout=0.3, opener=counting, env={}) == {}
    assert calls == [("PUT", f"http://127.0.0.1:{port}/latest/api/token", 0.3)]


@pytest.mark.integration
@pytest.mark.moto
def test_against_a_local_imdsv2_server():
    """The real urllib path (proxy-free opener, PUT with headers) against an HTTP server that
    answers like IMDSv2 and refuses metadata without the token."""

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_PUT(self):
            ok = self.path == "/latest/api/token" and \
                self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
            self._send(200 if ok else 400, b"T0K3N" if ok else b"")

        def do_GET(self):
            if self.headers.get("X-aws-ec2-metadata-token") != "T0K3N":
                return self._send(401, b"")
            key = self.path[len("/latest/meta-data/"):]
            self._send(200, GOOD[key]) if key in GOOD else self._send(404, b"")

        def _send(self, code, body):
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *a):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}"
        assert fetch_identity(url, timeout=2.0, env={}) == {
            "instance_id": "i-0123456789abcdef0", "instance_type": "p5.48xlarge",
            "region": "us-east-2"}
    finally:
        server.shutdown()
        server.server_close()
