"""Download pretrained files into a local cache, verified by the sha256 prefix in their name.

File names follow the torch.hub convention `name-<sha256 prefix>.ext`. A download streams
into `<name>.part-<random>` beside the final file and is moved into place only once its
length and hash check out, so an interrupted download never leaves a file that passes
as complete.
"""

from __future__ import annotations

import glob
import hashlib
import http.client
import json
import os
import re
import socket
import ssl
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import BinaryIO

import torch.hub
from tqdm import tqdm

from rewriting.errors import DownloadError

CACHE_ENVIRONMENT_VARIABLE = "REWRITING_CACHE"
DEFAULT_TIMEOUT_SECONDS = 30.0

# Large reads keep the per-chunk Python overhead negligible next to the hashing itself.
_CHUNK_BYTES = 1 << 20
# `.part-` files this old were left by a killed process, not by a download in progress.
_STALE_PART_SECONDS = 24 * 3600
_SHA256_SUFFIX = re.compile(r"-([0-9a-fA-F]{6,64})(?:\.[A-Za-z0-9]+)*$")
_HEX = re.compile(r"^[0-9a-f]{1,64}$")


class _Failure(Exception):
    """A short reason a download failed; `cached_path` turns it into a full DownloadError."""


def cache_dir() -> Path:
    """The download cache: `$REWRITING_CACHE` if set, else `<torch hub dir>/rewriting` (not created here)."""
    configured = os.environ.get(CACHE_ENVIRONMENT_VARIABLE)
    if configured:
        return Path(configured).expanduser()
    return Path(torch.hub.get_dir()) / "rewriting"


def sha256_file(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read in large chunks into one reused buffer."""
    hasher = hashlib.sha256()
    buffer = bytearray(_CHUNK_BYTES)
    view = memoryview(buffer)
    with open(path, "rb", buffering=0) as file:
        while count := file.readinto(buffer):
            hasher.update(view[:count])
    return hasher.hexdigest()


def sha256_prefix_from_name(name: str) -> str | None:
    """The sha256 prefix in a `name-<hex>.ext` file name (at least 6 hex digits), else None."""
    match = _SHA256_SUFFIX.search(name)
    return match.group(1).lower() if match else None


def verify_sha256_prefix(path: str | os.PathLike, prefix: str) -> str:
    """Check that the file's sha256 starts with `prefix`; return the full hex digest."""
    expected = _normalise_prefix(prefix)
    digest = sha256_file(path)
    if not digest.startswith(expected):
        raise DownloadError(
            f"{path} has sha256 {digest[:16]}…, which does not start with the expected "
            f"{expected}: the file is corrupt or a different version; delete it and fetch it again."
        )
    return digest


def cached_path(
    url: str,
    sha256_prefix: str | None = None,
    filename: str | None = None,
    progress: bool = True,
    cache: Path | None = None,
    option_hint: str = "generator.checkpoint=PATH",
    timeout: float = DEFAULT_TIMEOUT_SECONDS,
) -> Path:
    """Local path of the file at `url` (http, https or file), downloading and verifying it on a cache miss.

    The sha256 prefix defaults to the one in the file name; without either, the file is not verified.
    """
    target = Path(cache if cache is not None else cache_dir()) / _checked_filename(url, filename)
    expected = _normalise_prefix(sha256_prefix) if sha256_prefix is not None else sha256_prefix_from_name(target.name)
    wrong_cached_file = ""
    if target.is_file():
        if expected is None:
            return target
        cached_digest = _recorded_sha256(target)
        if cached_digest.startswith(expected):
            return target
        wrong_cached_file = f" (the file already there has sha256 {cached_digest[:16]}…, not {expected}…)"
    try:
        _download(url, target, expected, progress, timeout)
    except _Failure as failure:
        hint = f", or pass {option_hint}" if option_hint else ""
        raise DownloadError(
            f"Could not download {url}: {failure}. Put the file by hand at {target}"
            f"{wrong_cached_file}{hint}."
        ) from failure.__cause__
    return target


def _checked_filename(url: str, filename: str | None) -> str:
    name = filename if filename is not None else Path(urllib.parse.unquote(urllib.parse.urlparse(url).path)).name
    if not name or name in {".", ".."} or any(separator in name for separator in ("/", "\\", "\0")):
        raise DownloadError(
            f"Cannot derive a cache file name from {url!r} (got {name!r}); pass filename=NAME, a plain file name."
        )
    return name


def _normalise_prefix(prefix: str) -> str:
    normalised = prefix.strip().lower()
    if not _HEX.match(normalised):
        raise DownloadError(
            f"sha256 prefix {prefix!r} is not 1 to 64 hexadecimal digits; copy it from the file name "
            "(`name-<prefix>.ext`) or from `sha256sum FILE`."
        )
    return normalised


def _sidecar(path: Path) -> Path:
    return path.with_name(path.name + ".sha256")


def _recorded_sha256(path: Path) -> str:
    """The file's sha256, from its sidecar when size and mtime are unchanged since it was hashed."""
    stat = path.stat()
    try:
        record = json.loads(_sidecar(path).read_text())
        if (
            record["size"] == stat.st_size
            and record["mtime_ns"] == stat.st_mtime_ns
            and re.fullmatch(r"[0-9a-f]{64}", record["sha256"])
        ):
            return record["sha256"]
    except (OSError, ValueError, KeyError, TypeError):
        pass
    # Stat before hashing: if the file changes while being hashed, the recorded mtime is
    # already stale and the next call hashes again.
    digest = sha256_file(path)
    _write_sidecar(path, digest, stat)
    return digest


def _write_sidecar(path: Path, digest: str, stat: os.stat_result) -> None:
    record = json.dumps({"sha256": digest, "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
    sidecar = _sidecar(path)
    try:
        descriptor, temporary = tempfile.mkstemp(dir=path.parent, prefix=f"{sidecar.name}.part-")
        try:
            with os.fdopen(descriptor, "w") as file:
                file.write(record)
            os.replace(temporary, sidecar)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
    except OSError:
        pass  # the sidecar only saves re-hashing; a read-only cache still works without it


def _download(url: str, target: Path, expected: str | None, progress: bool, timeout: float) -> None:
    """Stream `url` into a temporary file beside `target`, verify it, and move it into place."""
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise _Failure(
            f"cannot create the cache folder ({error.strerror or error}); "
            f"set {CACHE_ENVIRONMENT_VARIABLE} to a writable folder"
        ) from error
    _remove_stale_parts(target)
    source, total = _open_source(url, timeout)
    with source:
        try:
            descriptor, temporary_name = tempfile.mkstemp(dir=target.parent, prefix=f"{target.name}.part-")
        except OSError as error:
            raise _Failure(f"cannot write to the cache folder ({error.strerror or error})") from error
        temporary = Path(temporary_name)
        try:
            with os.fdopen(descriptor, "wb") as out:
                digest, received = _stream(source, out, total, target.name, progress)
                out.flush()
                # Data must reach the disk before the rename makes the file look complete.
                os.fsync(out.fileno())
            if total is not None and received != total:
                raise _Failure(f"the download was cut short: got {received} of {total} bytes")
            if expected is not None and not digest.startswith(expected):
                raise _Failure(
                    f"sha256 mismatch: the downloaded file has sha256 {digest[:16]}…, expected prefix {expected}"
                )
            # mkstemp creates files readable only by their owner; a cache of public files may be shared.
            os.chmod(temporary, 0o644)
            os.replace(temporary, target)
        except BaseException as error:
            temporary.unlink(missing_ok=True)
            if isinstance(error, (OSError, http.client.HTTPException)):
                raise _Failure(_describe(error, timeout)) from error
            raise
    _write_sidecar(target, digest, target.stat())


def _remove_stale_parts(target: Path) -> None:
    cutoff = time.time() - _STALE_PART_SECONDS
    for part in target.parent.glob(f"{glob.escape(target.name)}.part-*"):
        try:
            if part.stat().st_mtime < cutoff:
                part.unlink()
        except OSError:
            pass


def _open_source(url: str, timeout: float) -> tuple[BinaryIO, int | None]:
    """An open binary stream for `url` and its length in bytes when known."""
    parsed = urllib.parse.urlparse(url)
    scheme = parsed.scheme.lower()
    if scheme == "file":
        if parsed.netloc not in {"", "localhost"}:
            raise _Failure(f"file:// URLs must name a local path, not host {parsed.netloc!r}")
        path = urllib.request.url2pathname(parsed.path)
        try:
            stream = open(path, "rb")
        except OSError as error:
            raise _Failure(_describe(error, timeout)) from error
        return stream, os.fstat(stream.fileno()).st_size
    if scheme in {"http", "https"}:
        request = urllib.request.Request(url, headers={"User-Agent": "rewriting (python urllib)"})
        try:
            response = urllib.request.urlopen(request, timeout=timeout)
        except (OSError, http.client.HTTPException, ValueError) as error:
            raise _Failure(_describe(error, timeout)) from error
        length = response.headers.get("Content-Length")
        return response, int(length) if length and length.strip().isdigit() else None
    raise _Failure(f"unsupported URL scheme {parsed.scheme!r}; use http://, https:// or file://")


def _stream(source: BinaryIO, out: BinaryIO, total: int | None, name: str, progress: bool) -> tuple[str, int]:
    """Copy `source` to `out`, hashing on the way; return (hex sha256, bytes copied)."""
    hasher = hashlib.sha256()
    received = 0
    with tqdm(
        total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr, disable=not progress
    ) as bar:
        while chunk := source.read(_CHUNK_BYTES):
            out.write(chunk)
            hasher.update(chunk)
            received += len(chunk)
            bar.update(len(chunk))
    return hasher.hexdigest(), received


def _describe(error: BaseException, timeout: float) -> str:
    """A short, human reason for a network or file error."""
    if isinstance(error, urllib.error.HTTPError):
        return f"the server answered HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        reason = error.reason
        return _describe(reason, timeout) if isinstance(reason, BaseException) else str(reason)
    if isinstance(error, socket.gaierror):
        return "could not resolve the host name (offline, or a DNS failure)"
    if isinstance(error, ConnectionRefusedError):
        return "connection refused (no server listening)"
    if isinstance(error, TimeoutError):
        return f"timed out (no data for {timeout:g} s)"
    if isinstance(error, ssl.SSLError):
        return f"TLS error ({error})"
    if isinstance(error, http.client.HTTPException):
        return f"the connection broke ({type(error).__name__}: {error})"
    if isinstance(error, FileNotFoundError):
        return "no such file"
    if isinstance(error, OSError):
        return error.strerror or str(error) or type(error).__name__
    return f"{type(error).__name__}: {error}"
