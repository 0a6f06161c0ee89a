"""Weight files: downloads capped in size and time, cached files re-hashed, LINEPAIRS_WEIGHTS searched
one folder per network, config weights paths relative to the config; eval uses the build's weights."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import sys
import threading
import time

import pytest

import lineart
from groundwork import checkpoints as W
from groundwork.checkpoints import WeightsError, WeightsSpec, resolve
from pipelines.cli import main
from pipelines.config import load_config

PAYLOAD = os.urandom(4096)


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        if self.path == "/slow":
            self.send_response(200)
            self.send_header("Content-Length", str(len(PAYLOAD)))
            self.end_headers()
            for i in range(0, len(PAYLOAD), 64):  # a trickle: each read returns, the whole never ends in time
                self.wfile.write(PAYLOAD[i : i + 64])
                self.wfile.flush()
                time.sleep(0.05)
            return
        if self.path == "/endless":  # no Content-Length, more bytes than any cap
            self.send_response(200)
            self.end_headers()
            for _ in range(64):
                self.wfile.write(b"\0" * 1024)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(PAYLOAD)))
        self.end_headers()
        self.wfile.write(PAYLOAD)


class QuietServer(http.server.ThreadingHTTPServer):
    def handle_error(self, request, client_address):
        """A client that gave up (the deadline and cap tests) is expected; anything else is printed."""
        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@pytest.fixture(scope="module")
def server():
    httpd = QuietServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path / "cache"))
    monkeypatch.delenv("LINEPAIRS_OFFLINE", raising=False)
    return tmp_path / "cache"


def spec(url: str, name: str = "net.pth") -> WeightsSpec:
    return WeightsSpec(name, url, hashlib.sha256(PAYLOAD).hexdigest())


def flip_first_byte(path) -> None:
    """Same size, the first byte changed. (Writing a fixed byte was a no-op 1 time in 256: PAYLOAD is random.)"""
    with open(path, "r+b") as fh:
        first = fh.read(1)[0]
        fh.seek(0)
        fh.write(bytes([first ^ 0xFF]))


def test_download_then_a_damaged_cache_is_rehashed_and_fetched_again(server, cache, monkeypatch):
    path = resolve(spec(f"{server}/good"))
    assert open(path, "rb").read() == PAYLOAD
    flip_first_byte(path)
    time.sleep(0.01)
    os.utime(path)
    assert open(resolve(spec(f"{server}/good")), "rb").read() == PAYLOAD  # re-hashed, downloaded again
    flip_first_byte(path)
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 1000))
    monkeypatch.setenv("LINEPAIRS_OFFLINE", "1")
    with pytest.raises(WeightsError, match="damaged"):
        resolve(spec(f"{server}/good"))


def test_download_size_cap(server, cache, monkeypatch):
    monkeypatch.setattr(W, "MAX_DOWNLOAD_BYTES", 2048)
    with pytest.raises(WeightsError, match="cap"):
        resolve(spec(f"{server}/good"))
    with pytest.raises(WeightsError, match="cap"):
        resolve(spec(f"{server}/endless", "endless.pth"))
    assert not os.listdir(cache)  # no partial file left


def test_download_deadline(server, cache, monkeypatch):
    monkeypatch.setattr(W, "DOWNLOAD_DEADLINE_S", 0.5)
    start = time.monotonic()
    with pytest.raises(WeightsError, match="took over"):
        resolve(spec(f"{server}/slow"))
    assert time.monotonic() - start < 10


def test_weights_folder_one_folder_per_network(shared, monkeypatch):
    folder = os.path.join(shared, "weights")
    if not os.path.isfile(os.path.join(folder, "pidinet", "table5_pidinet.pth")):
        pytest.skip("shared pidinet weights absent")
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", folder)
    monkeypatch.setenv("LINEPAIRS_OFFLINE", "1")
    ext = lineart.create("pidinet")
    assert ext.weights_sha256 == "80860ac267258b5f27486e0ef152a211d0b08120f62aeb185a050acc30da486c"


def test_config_weights_are_relative_to_the_config_file(tmp_path, monkeypatch):
    (tmp_path / "cfg").mkdir()
    toml = tmp_path / "cfg" / "b.toml"
    toml.write_text('[[extractors]]\nname = "pidinet"\nweights = "nets/pidinet.pth"\n')
    monkeypatch.chdir(tmp_path)
    (spec_,) = load_config(str(toml)).extractors
    assert spec_.weights == str(tmp_path / "cfg" / "nets" / "pidinet.pth")


def test_eval_uses_the_weights_the_build_recorded(shared, tmp_path, monkeypatch):
    from wnet.evaluate import build_extractors

    weights = os.path.join(shared, "weights", "pidinet", "table5_pidinet.pth")
    if not os.path.isfile(weights):
        pytest.skip("shared pidinet weights absent")
    monkeypatch.setenv("LINEPAIRS_WEIGHTS", str(tmp_path / "empty"))  # not findable by name
    monkeypatch.setenv("LINEPAIRS_OFFLINE", "1")
    build = tmp_path / "build"
    build.mkdir()
    (build / "build.json").write_text(
        json.dumps({"extractors": {"pidinet": {"weights": weights, "options": {}}}})
    )
    made = build_extractors(str(build))
    assert made["pidinet"].weights_sha256.startswith("80860ac2")


def test_extract_list_needs_no_image(capsys):
    assert main(["extract", "--list"]) == 0
    assert "canny" in capsys.readouterr().out
