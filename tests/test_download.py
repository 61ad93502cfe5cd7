"""Downloads with cache and sha256 verification, against a local HTTP server and file:// URLs."""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from rewriting.errors import DownloadError
from rewriting.models import download
from rewriting.models.download import (
    cache_dir,
    cached_path,
    sha256_file,
    sha256_prefix_from_name,
    verify_sha256_prefix,
)


class _QuietHandler(SimpleHTTPRequestHandler):
    """Serves a folder; `/truncated/...` promises more bytes than it sends, then hangs up."""

    def log_message(self, format, *args):
        pass

    def do_GET(self):
        if self.path.startswith("/truncated/"):
            self.send_response(200)
            self.send_header("Content-Length", "100000")
            self.end_headers()
            self.wfile.write(b"only the start of the body")
            self.wfile.flush()
            self.close_connection = True
            return
        super().do_GET()


@dataclass
class LocalServer:
    folder: Path
    base_url: str
    server: ThreadingHTTPServer
    thread: threading.Thread

    def url(self, name: str) -> str:
        return f"{self.base_url}/{name}"

    def stop(self) -> None:
        if self.thread.is_alive():
            self.server.shutdown()
            self.server.server_close()
            self.thread.join()


@pytest.fixture
def server(tmp_path, monkeypatch):
    # A proxy from the environment must not intercept requests to the local server.
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    folder = tmp_path / "served"
    folder.mkdir()
    http_server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_QuietHandler, directory=str(folder)))
    http_server.daemon_threads = True
    thread = threading.Thread(target=http_server.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True)
    thread.start()
    running = LocalServer(folder, f"http://127.0.0.1:{http_server.server_address[1]}", http_server, thread)
    yield running
    running.stop()


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "cache"


def _serve_model(server: LocalServer, size: int = 300_000, seed: int = 0) -> tuple[str, bytes]:
    """Put a random payload named `model-<sha256 prefix>.pt` in the served folder; return (name, bytes)."""
    payload = hashlib.shake_256(f"payload {seed}".encode()).digest(size)
    name = f"model-{hashlib.sha256(payload).hexdigest()[:8]}.pt"
    (server.folder / name).write_bytes(payload)
    return name, payload


def _leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir()) if folder.exists() else []


def _closed_port_url(name: str) -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/{name}"


def test_first_download_places_verified_file(server, cache):
    name, payload = _serve_model(server)
    path = cached_path(server.url(name), cache=cache, progress=False)
    assert path == cache / name
    assert path.read_bytes() == payload
    assert sha256_file(path).startswith(sha256_prefix_from_name(name))
    assert not [leftover for leftover in _leftovers(cache) if ".part-" in leftover]


def test_cache_hit_needs_no_network(server, cache):
    name, payload = _serve_model(server)
    first = cached_path(server.url(name), cache=cache, progress=False)
    server.stop()
    assert cached_path(server.url(name), cache=cache, progress=False) == first
    assert first.read_bytes() == payload


def test_cache_hit_does_not_hash_again(server, cache, monkeypatch):
    name, _ = _serve_model(server)
    cached_path(server.url(name), cache=cache, progress=False)
    server.stop()

    def no_hashing(path):
        raise AssertionError(f"cache hit re-hashed {path}")

    monkeypatch.setattr(download, "sha256_file", no_hashing)
    assert cached_path(server.url(name), cache=cache, progress=False) == cache / name


def test_changed_cached_file_is_verified_again(server, cache):
    name, payload = _serve_model(server)
    path = cached_path(server.url(name), cache=cache, progress=False)
    server.stop()
    # Same size, different bytes, newer mtime: only a fresh hash can tell.
    path.write_bytes(bytes(len(payload)))
    later = path.stat().st_mtime_ns + 2_000_000_000
    os.utime(path, ns=(later, later))
    with pytest.raises(DownloadError, match="already there has sha256"):
        cached_path(server.url(name), cache=cache, progress=False)


def test_wrong_cached_file_is_replaced_by_download(server, cache):
    name, payload = _serve_model(server)
    cache.mkdir()
    (cache / name).write_bytes(b"not the model")
    path = cached_path(server.url(name), cache=cache, progress=False)
    assert path.read_bytes() == payload


def test_hash_mismatch_leaves_nothing(server, cache):
    _, payload = _serve_model(server)
    wrong_name = "model-00000000.pt"
    (server.folder / wrong_name).write_bytes(payload)
    with pytest.raises(DownloadError, match="sha256") as raised:
        cached_path(server.url(wrong_name), cache=cache, progress=False)
    assert "00000000" in str(raised.value)
    assert _leftovers(cache) == []


def test_explicit_prefix_verifies_unsuffixed_name(server, cache):
    _, payload = _serve_model(server)
    (server.folder / "plain.bin").write_bytes(payload)
    with pytest.raises(DownloadError, match="sha256"):
        cached_path(server.url("plain.bin"), sha256_prefix="abcdef", cache=cache, progress=False)
    assert _leftovers(cache) == []
    prefix = hashlib.sha256(payload).hexdigest()[:10].upper()
    assert cached_path(server.url("plain.bin"), sha256_prefix=prefix, cache=cache, progress=False).read_bytes() == payload


def test_truncated_body_is_rejected(server, cache):
    url = server.url("truncated/model-abcdef12.pt")
    with pytest.raises(DownloadError, match="cut short"):
        cached_path(url, cache=cache, progress=False)
    assert _leftovers(cache) == []


def test_server_down_names_url_cache_path_and_option(server, cache):
    name, _ = _serve_model(server)
    url = server.url(name)
    server.stop()
    with pytest.raises(DownloadError) as raised:
        cached_path(url, cache=cache, progress=False)
    message = str(raised.value)
    assert url in message
    assert str(cache / name) in message
    assert "generator.checkpoint=PATH" in message
    assert "refused" in message
    assert _leftovers(cache) == []


def test_option_hint_is_named(cache):
    with pytest.raises(DownloadError, match=r"or pass edit\.request=PATH"):
        cached_path(_closed_port_url("request.json"), cache=cache, progress=False, option_hint="edit.request=PATH")


def test_http_error_is_reported(server, cache):
    with pytest.raises(DownloadError, match="HTTP 404"):
        cached_path(server.url("missing-abcdef12.pt"), cache=cache, progress=False)
    assert _leftovers(cache) == []


def test_silent_server_times_out(cache, monkeypatch):
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    with socket.socket() as silent:
        # Listens (the kernel completes the handshake) but never answers.
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)
        url = f"http://127.0.0.1:{silent.getsockname()[1]}/model-abcdef12.pt"
        started = time.monotonic()
        with pytest.raises(DownloadError, match="timed out"):
            cached_path(url, cache=cache, progress=False, timeout=0.3)
        assert time.monotonic() - started < 10
    assert _leftovers(cache) == []


def test_file_url(tmp_path, cache):
    payload = b"weights" * 1000
    source = tmp_path / f"model-{hashlib.sha256(payload).hexdigest()[:12]}.pt"
    source.write_bytes(payload)
    path = cached_path(source.as_uri(), cache=cache, progress=False)
    assert path == cache / source.name
    assert path.read_bytes() == payload


def test_missing_file_url(tmp_path, cache):
    url = (tmp_path / "absent-abcdef12.pt").as_uri()
    with pytest.raises(DownloadError, match="no such file"):
        cached_path(url, cache=cache, progress=False)
    assert _leftovers(cache) == []


def test_environment_variable_sets_cache(server, tmp_path, monkeypatch):
    chosen = tmp_path / "chosen cache"
    monkeypatch.setenv("REWRITING_CACHE", str(chosen))
    assert cache_dir() == chosen
    name, payload = _serve_model(server)
    assert cached_path(server.url(name), progress=False) == chosen / name
    assert (chosen / name).read_bytes() == payload


def test_default_cache_is_under_torch_hub(tmp_path, monkeypatch):
    monkeypatch.delenv("REWRITING_CACHE", raising=False)
    monkeypatch.setattr(download.torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert cache_dir() == tmp_path / "hub" / "rewriting"
    assert not (tmp_path / "hub").exists()


def test_keyboard_interrupt_mid_download_leaves_nothing(server, cache, monkeypatch):
    name, _ = _serve_model(server, size=3 << 20)

    class InterruptedBar:
        def __init__(self, *args, **kwargs):
            self.chunks = 0

        def __enter__(self):
            return self

        def __exit__(self, *exc_info):
            return False

        def update(self, count):
            self.chunks += 1
            if self.chunks == 2:
                raise KeyboardInterrupt

    monkeypatch.setattr(download, "tqdm", InterruptedBar)
    with pytest.raises(KeyboardInterrupt):
        cached_path(server.url(name), cache=cache)
    assert _leftovers(cache) == []


def test_file_placed_by_hand_is_used_without_network(cache):
    payload = b"hand-copied checkpoint"
    name = f"model-{hashlib.sha256(payload).hexdigest()[:8]}.pt"
    cache.mkdir()
    (cache / name).write_bytes(payload)
    assert cached_path(_closed_port_url(name), cache=cache, progress=False) == cache / name


def test_stale_partial_downloads_are_cleared(server, cache):
    name, _ = _serve_model(server)
    cache.mkdir()
    stale = cache / f"{name}.part-killed"
    fresh = cache / f"{name}.part-running"
    stale.write_bytes(b"old")
    fresh.write_bytes(b"new")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(stale, (two_days_ago, two_days_ago))
    cached_path(server.url(name), cache=cache, progress=False)
    assert not stale.exists()
    assert fresh.exists()


def test_unusable_urls_are_rejected(cache):
    with pytest.raises(DownloadError, match="filename="):
        cached_path("http://127.0.0.1/", cache=cache, progress=False)
    with pytest.raises(DownloadError, match="unsupported URL scheme"):
        cached_path("ftp://example.org/model-abcdef12.pt", cache=cache, progress=False)
    with pytest.raises(DownloadError, match="hexadecimal"):
        cached_path("http://127.0.0.1/model.pt", sha256_prefix="not-hex", cache=cache, progress=False)


@pytest.mark.parametrize("size", [0, 1, (1 << 20) - 1, (5 << 20) // 2])
def test_sha256_file_matches_hashlib(tmp_path, size):
    payload = hashlib.shake_256(b"hash me").digest(size) if size else b""
    path = tmp_path / "blob"
    path.write_bytes(payload)
    assert sha256_file(path) == hashlib.sha256(payload).hexdigest()


def test_verify_sha256_prefix(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(b"content")
    digest = hashlib.sha256(b"content").hexdigest()
    assert verify_sha256_prefix(path, digest[:8].upper()) == digest
    with pytest.raises(DownloadError, match="does not start with"):
        verify_sha256_prefix(path, "0" * 8 if not digest.startswith("0" * 8) else "1" * 8)


@pytest.mark.parametrize(
    "name, prefix",
    [
        ("stylegan2_church-e8ca9fd0.pt", "e8ca9fd0"),
        ("proggan_churchoutdoor-7e701dd5.pth", "7e701dd5"),
        ("archive-ABCDEF12.tar.gz", "abcdef12"),
        ("checkpoint.pt", None),
        ("short-abc12.pt", None),
        ("my-model-final.pt", None),
    ],
)
def test_sha256_prefix_from_name(name, prefix):
    assert sha256_prefix_from_name(name) == prefix
