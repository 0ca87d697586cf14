"""Where inputs and outputs live: local paths (plain os calls) or fsspec URLs such as ``s3://bucket/prefix/``."""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from typing import Any

from .errors import ConfigError
from .writer import discard_temp as _discard_local_temp
from .writer import write_atomic

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")
BLOCK_BYTES = 1 << 20


def is_url(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` names a place through fsspec (``s3://...``, ``gs://...``, ``file://...``)
    rather than a local path. Everything local keeps the plain os code paths."""
    return isinstance(path, str) and _SCHEME.match(path) is not None


def filesystem(url: str) -> tuple[Any, str]:
    """The fsspec file system serving ``url`` and the path within it. Raises ConfigError (one line,
    with the install hint) when fsspec or the protocol's package is missing. Credentials and
    endpoints come from the environment (``AWS_*``, ``FSSPEC_S3_*``) of every process alike."""
    try:
        from fsspec.core import url_to_fs
    except ImportError:
        raise ConfigError(f"{url}: URLs need fsspec: pip install 'voiceprep[cloud]'") from None
    try:
        fs, path = url_to_fs(url)
        return fs, str(path)
    except ImportError as exc:
        raise ConfigError(f"{url}: its protocol needs a package that is not installed ({exc}); "
                          "for s3:// run pip install 'voiceprep[cloud]'") from None
    except ValueError as exc:
        raise ConfigError(f"{url}: {exc}") from None


def join(base: str, *names: str) -> str:
    if not is_url(base):
        return os.path.join(base, *names)
    return "/".join([base.rstrip("/"), *names])


def basename(path: str) -> str:
    """The last name of ``path`` (a folder's own name, trailing slashes ignored)."""
    if not is_url(path):
        return os.path.basename(os.path.normpath(os.path.abspath(path)))
    return path.rstrip("/").rsplit("/", 1)[-1]


def relative(path: str, folder: str) -> str:
    """``path`` relative to ``folder`` (which holds it)."""
    if not is_url(path):
        return os.path.relpath(path, folder)
    prefix = folder.rstrip("/") + "/"
    return path[len(prefix):] if path.startswith(prefix) else path


def canonical(path: str) -> str:
    """A form two spellings of one place share (for telling whether an output would replace an input)."""
    if not is_url(path):
        return os.path.abspath(path)
    scheme, rest = path.split("://", 1)
    return scheme.lower() + "://" + re.sub("/+", "/", rest).rstrip("/")


def same(a: str, b: str) -> bool:
    """Whether ``a`` and ``b`` are one file or folder."""
    if is_url(a) or is_url(b):
        return is_url(a) and is_url(b) and canonical(a) == canonical(b)
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def isdir(path: str) -> bool:
    if not is_url(path):
        return os.path.isdir(path)
    fs, p = filesystem(path)
    return bool(fs.isdir(p))


def isfile(path: str) -> bool:
    if not is_url(path):
        return os.path.isfile(path)
    fs, p = filesystem(path)
    return bool(fs.isfile(p))


def exists(path: str) -> bool:
    if not is_url(path):
        return os.path.exists(path)
    fs, p = filesystem(path)
    return bool(fs.exists(p))


def listing(folder: str) -> tuple[list[str], list[str]]:
    """(names of the files, names of the subfolders) directly in the URL ``folder``, read afresh;
    hidden names left out. The local walk has its own, faster listing (plan.py)."""
    fs, p = filesystem(folder)
    try:
        entries = fs.ls(p, detail=True, refresh=True)
    except (OSError, ValueError):
        return [], []
    files: list[str] = []
    dirs: list[str] = []
    base = p.rstrip("/")
    for e in entries:
        name = str(e["name"]).rstrip("/").rsplit("/", 1)[-1]
        if not name or name.startswith(".") or str(e["name"]).rstrip("/") == base:
            continue
        (dirs if e.get("type") == "directory" else files).append(name)
    return files, sorted(dirs)


def _stamp(info: dict[str, Any]) -> int:
    """An integer that changes when a stored object changes: its modification time, mixed with its
    ETag or generation where the store gives one (object stores date objects only to the second)."""
    when: Any = next((info[k] for k in ("mtime", "LastModified", "last_modified", "updated", "modified") if k in info), None)
    if isinstance(when, datetime.datetime):
        when = when.timestamp()
    elif isinstance(when, str):
        with contextlib.suppress(ValueError):
            when = datetime.datetime.fromisoformat(when.replace("Z", "+00:00")).timestamp()
    ns = int(float(when) * 1e9) if isinstance(when, (int, float)) else -1
    tag = next((str(info[k]) for k in ("ETag", "etag", "generation", "version_id") if info.get(k)), "")
    if not tag:
        return ns
    digest = hashlib.blake2b(f"{ns}|{tag}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") >> 1  # fits SQLite's signed 64-bit integers


def stat(path: str) -> tuple[int, int]:
    """(size in bytes, modification stamp) of a file: ``st_mtime_ns`` locally, ``_stamp`` for a URL.
    Raises OSError when it cannot be read."""
    if not is_url(path):
        st = os.stat(path)
        return st.st_size, st.st_mtime_ns
    fs, p = filesystem(path)
    info = fs.info(p)
    if info.get("type") == "directory":
        raise IsADirectoryError(path)
    return int(info.get("size") or 0), _stamp(info)


def sha256(path: str) -> str:
    """The content hash of a file (a URL's object is streamed, not held)."""
    h = hashlib.sha256()
    with _open(path) as fh:
        while block := fh.read(BLOCK_BYTES):
            h.update(block)
    return h.hexdigest()


def _open(path: str) -> Any:
    if not is_url(path):
        return open(path, "rb")
    fs, p = filesystem(path)
    return fs.open(p, "rb")


@contextlib.contextmanager
def local_copy(path: str) -> Iterator[str]:
    """A local file with ``path``'s content, for decoding: ``path`` itself when local, else a
    temporary copy under the same name (removed on exit). Raises OSError when it cannot be read."""
    if not is_url(path):
        yield path
        return
    fs, p = filesystem(path)
    folder = tempfile.mkdtemp(prefix="voiceprep-in-")
    try:
        local = os.path.join(folder, basename(path) or "input")
        fs.get_file(p, local)
        yield local
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def write(path: str, data: bytes) -> int:
    """Write an output whole: locally through ``writer.write_atomic``; to an object store in one
    upload (an object appears whole or not at all). Returns the size in bytes."""
    if not is_url(path):
        return write_atomic(path, data)
    fs, p = filesystem(path)
    fs.pipe_file(p, data)
    return len(data)


def upload(local: str, path: str) -> None:
    """Copy the local file ``local`` to the URL ``path`` (one upload)."""
    fs, p = filesystem(path)
    fs.put_file(local, p)


def download(path: str, local: str) -> bool:
    """Copy the URL ``path`` to the local file ``local``; False when there is no such object."""
    fs, p = filesystem(path)
    try:
        fs.get_file(p, local)
    except FileNotFoundError:
        return False
    return True


def discard_temp(path: str) -> None:
    """Remove what an abandoned write of ``path`` left (an upload leaves nothing)."""
    if not is_url(path):
        _discard_local_temp(path)


def remove(path: str) -> None:
    """Remove a file; one already gone is fine."""
    if not is_url(path):
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        return
    fs, p = filesystem(path)
    with contextlib.suppress(FileNotFoundError):
        fs.rm_file(p)
