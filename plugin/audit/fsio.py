"""Audit inputs and outputs given as fsspec URLs (``s3://``, ``gs://``, ``file://``, ...).

The audit reads local files (it splits exports by byte ranges and hands paths to its worker
processes), so a remote input is first copied into a local staging folder, keeping its layout
(``<staging>/<protocol>/<bucket>/<path>``); ``*.ndjson.gz`` / ``*.jsonl.gz`` files are
decompressed on the way. A remote output folder is written locally first and the report files
are uploaded once the audit has finished. Local paths and ``file://`` URLs are used in place.

``s3://`` needs the ``s3`` extra (s3fs), ``gs://`` the ``gcs`` extra (gcsfs); credentials come
from those libraries' usual places (environment, profiles, metadata servers), never from here.
"""

from __future__ import annotations

import gzip
import re
import shutil
from collections.abc import Iterable
from pathlib import Path, PurePosixPath
from typing import IO, Any, cast
from urllib.parse import unquote, urlsplit

INPUT_SUFFIXES = (".json", ".ndjson", ".jsonl")
GZIP_SUFFIXES = (".ndjson.gz", ".jsonl.gz")
_EXTRAS = {"s3": "s3", "s3a": "s3", "gs": "gcs", "gcs": "gcs"}
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.\-]*)://")


class StorageError(Exception):
    """A URL the audit cannot use; ``str(error)`` is the one line to show."""


def is_url(text: str) -> bool:
    """``scheme://...`` (a Windows drive letter like ``C:\\`` is not a URL)."""
    return _SCHEME.match(text) is not None


def local_path(text: str) -> Path | None:
    """The local path ``text`` names (a plain path or ``file://``), else None."""
    if not is_url(text):
        return Path(text)
    parts = urlsplit(text)
    if parts.scheme.lower() == "file" and parts.netloc in ("", "localhost"):
        return Path(unquote(parts.path))
    return None


def filesystem(url: str) -> tuple[Any, str]:
    """(fsspec filesystem, path inside it) for ``url``; a missing backend is a clear error."""
    import fsspec

    try:
        fs, path = fsspec.core.url_to_fs(url)
    except ImportError:
        scheme = url.split("://", 1)[0].lower()
        extra = _EXTRAS.get(scheme)
        hint = (
            f"install the {extra!r} extra (pip install 'therapy-cds[{extra}]')"
            if extra
            else "install the fsspec backend for it"
        )
        raise StorageError(f"{url}: {scheme}:// is not available here; {hint}") from None
    except ValueError as exc:
        scheme = url.split("://", 1)[0]
        raise StorageError(
            f"{url}: {scheme}:// is not a storage this audit knows ({exc})"
        ) from None
    return fs, cast(str, path)


def _wanted(name: str) -> bool:
    lowered = name.lower()
    return lowered.endswith(INPUT_SUFFIXES + GZIP_SUFFIXES)


def stage_inputs(urls: Iterable[str], staging: Path) -> list[Path]:
    """Copy the files of each remote input (a file or a folder, recursively) under
    ``staging``; returns one local path per URL (the copied file or folder)."""
    staged: list[Path] = []
    for url in urls:
        fs, root = filesystem(url)
        protocol = fs.protocol if isinstance(fs.protocol, str) else fs.protocol[0]
        mirror = staging / _relative(protocol, root)
        try:
            if fs.isdir(root):
                files = sorted(p for p in fs.find(root) if _wanted(PurePosixPath(p).name))
                mirror.mkdir(parents=True, exist_ok=True)
                for found in files:
                    inside = PurePosixPath(found).relative_to(PurePosixPath(root.rstrip("/")))
                    _copy(fs, found, mirror / _relative("", str(inside)))
                staged.append(mirror)
            elif fs.isfile(root):
                target = _copy(fs, root, mirror)
                staged.append(target)
            else:
                raise StorageError(f"{url}: no such file or folder")
        except StorageError:
            raise
        except (OSError, ValueError) as exc:
            raise StorageError(f"{url}: cannot be read ({_reason(exc)})") from None
    return staged


def _relative(protocol: str, path: str) -> Path:
    """A safe relative path: no empty, ``.`` or ``..`` parts."""
    parts = [p for p in (protocol, *path.split("/")) if p and p not in (".", "..")]
    return Path(*parts) if parts else Path("input")


def _copy(fs: Any, source: str, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if target.name.lower().endswith(GZIP_SUFFIXES):
        target = target.with_name(target.name[: -len(".gz")])
        with (
            fs.open(source, "rb") as raw,
            gzip.open(cast(IO[bytes], raw), "rb") as unpacked,
            target.open("wb") as sink,
        ):
            try:
                shutil.copyfileobj(unpacked, sink, 1 << 20)
            except (OSError, EOFError):
                raise StorageError(f"{source}: damaged gzip; re-export or re-upload it") from None
        return target
    with fs.open(source, "rb") as raw, target.open("wb") as sink:
        shutil.copyfileobj(raw, sink, 1 << 20)
    return target


def check_writable(url: str) -> None:
    """Fail early (before any download or audit) when ``url`` cannot take the report."""
    fs, root = filesystem(url)
    try:
        if fs.isfile(root):
            raise StorageError(f"{url}: exists and is not a folder; give a folder for the report")
        fs.makedirs(root, exist_ok=True)
    except StorageError:
        raise
    except (OSError, ValueError) as exc:
        raise StorageError(f"{url}: cannot write the report there ({_reason(exc)})") from None


def upload_outputs(local: Path, url: str, names: Iterable[str]) -> list[str]:
    """Copy the report files ``names`` from ``local`` to the folder ``url``."""
    fs, root = filesystem(url)
    written = []
    try:
        fs.makedirs(root, exist_ok=True)
        for name in names:
            source = local / name
            if not source.exists():
                continue
            target = f"{root.rstrip('/')}/{name}"
            with source.open("rb") as handle, fs.open(target, "wb") as sink:
                shutil.copyfileobj(handle, sink, 1 << 20)
            written.append(target)
    except (OSError, ValueError) as exc:
        raise StorageError(f"{url}: cannot write the report there ({_reason(exc)})") from None
    return written


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return type(exc).__name__
