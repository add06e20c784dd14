"""Read one input file: a Bundle, a single resource, a CDS Hooks request, or NDJSON.

:func:`load_path` either returns an :class:`InputDocument` or raises :class:`InputError`, whose
message is one line naming the file, what is wrong and what to do; the CLI prints it and exits 2
(product contract, ``check``). Problems *inside* an otherwise readable input (one bad NDJSON line,
one entry without a resourceType) are :class:`~fhir_mappings.model.MappingIssue` values instead.
Messages never quote file contents.

Every input file is opened through :func:`open_input` (``check``, ``audit``, ``invoke``), which
bounds the work a file can cause: only regular files are read (a FIFO, device or socket would
block or never end), a file larger than ``max_bytes`` is refused before it is read, and gzip is
decompressed as a stream that stops at ``max_bytes`` (the decompressed size counts, so a gzip
bomb never grows past the cap). NDJSON is read line by line; a JSON document must be parsed
whole, so it is held once, at most ``max_bytes`` long.
"""

from __future__ import annotations

import codecs
import gzip
import io
import os
import re
import stat
import sys
import zlib
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from enum import StrEnum
from typing import IO, Any, Final

import orjson
from pydantic import ByteSize

from fhir_mappings.mapper import map_collected
from fhir_mappings.model import IssueCode, MappingIssue, TherapyRecord
from fhir_mappings.sources import (
    Collected,
    SourcedResource,
    collect_bundle,
    collect_cds_request,
    collect_resource,
)

_NDJSON_SUFFIXES = (".ndjson", ".jsonl", ".ndjson.gz", ".jsonl.gz")
_CDS_REQUEST_KEYS = frozenset({"hook", "hookInstance", "context", "prefetch"})
_BOM = b"\xef\xbb\xbf"
_BLANK = re.compile(rb"\s*")  # ASCII white space, as bytes.strip() removes
_XML = re.compile(rb"\s*<")
_NDJSON_START = re.compile(rb"\s*\{[^\n]*\n\s*\{")  # two lines, each starting an object

# The default cap on one input file (decompressed); THERAPY_CDS_MAX_FILE_SIZE / --max-file-size.
DEFAULT_MAX_FILE_BYTES: Final = 256_000_000
_BLOCK = 1 << 20  # bytes read (or decompressed) at a time
_SIZE_HINT = "split it, or raise the limit with --max-file-size or THERAPY_CDS_MAX_FILE_SIZE"


class InputProblem(StrEnum):
    """Why a whole input file was refused: stable codes (the audit's ``rejected.csv``)."""

    UNREADABLE = "unreadable-file"  # missing, no permission, not JSON, not FHIR ...
    NOT_A_REGULAR_FILE = "not-a-regular-file"  # a FIFO, device or socket
    TOO_LARGE = "file-too-large"  # over the size cap (decompressed size for gzip)


class InputError(Exception):
    """An input that cannot be read at all. ``str(error)`` is the one-line message to show."""

    def __init__(
        self, source: str, problem: str, code: InputProblem = InputProblem.UNREADABLE
    ) -> None:
        self.source = source
        self.problem = problem
        self.code = code
        super().__init__(f"{source}: {problem}")


class NotFhirError(InputError):
    """Valid JSON that is not FHIR data nor a CDS Hooks request (a manifest, a response body):
    ``check`` skips such a file found in a folder, with a note, and refuses it when named."""


def format_size(size: int) -> str:
    """``2147483648`` -> ``"2.1GB"`` (decimal units, as ``--max-file-size 5GB`` reads them)."""
    return ByteSize(size).human_readable(decimal=True)


# ------------------------------------------------------------------------ opening a file


def _file_type(mode: int) -> str | None:
    """What a non-regular file is, in words (None for a regular file)."""
    if stat.S_ISREG(mode):
        return None
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "special file"


def _refuse_type(source: str, kind: str) -> InputError:
    if kind == "directory":
        return InputError(source, "is a directory; give a JSON or NDJSON file")
    return InputError(
        source,
        f"is a {kind}, not a regular file; save the data to a file and give that file",
        InputProblem.NOT_A_REGULAR_FILE,
    )


def _os_error(source: str, exc: OSError) -> InputError:
    if isinstance(exc, FileNotFoundError):
        return InputError(source, "file not found; check the path")
    reason = exc.strerror or type(exc).__name__
    return InputError(source, f"cannot be read ({reason}); check permissions")


def open_regular(path: str | os.PathLike[str]) -> IO[bytes]:
    """Open ``path`` for reading if it is a regular file; else raise :class:`InputError`.

    The type is checked before opening (opening a FIFO for reading waits for a writer, a device
    may never end) and again on the open descriptor, which is opened non-blocking so that a file
    swapped for a FIFO in between cannot block either.
    """
    source = os.fspath(path)
    try:
        kind = _file_type(os.stat(source).st_mode)
        if kind is not None:
            raise _refuse_type(source, kind)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0)
        fd = os.open(source, flags)
    except OSError as exc:
        raise _os_error(source, exc) from None
    try:
        kind = _file_type(os.fstat(fd).st_mode)
        if kind is not None:
            raise _refuse_type(source, kind)
        if flags & getattr(os, "O_NONBLOCK", 0):
            os.set_blocking(fd, True)  # no effect on a regular file; restores the usual mode
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


class InputStream:
    """The bytes of one input file, gunzipped if it is gzip, never more than ``max_bytes``.

    ``max_bytes`` ``None`` means no cap (the caller bounds its own reads).
    """

    def __init__(self, source: str, handle: IO[bytes], max_bytes: int | None) -> None:
        self.source = source
        self.max_bytes = max_bytes
        self.size = handle.seek(0, io.SEEK_END)  # a regular file (or bytes in memory)
        handle.seek(0)
        self._file = handle
        self._read = 0
        if max_bytes is not None and self.size > max_bytes:
            raise InputError(
                source,
                f"is {format_size(self.size)}, over the {format_size(max_bytes)} limit for one "
                f"input file; {_SIZE_HINT}",
                InputProblem.TOO_LARGE,
            )
        self.compressed = handle.read(2) == b"\x1f\x8b"  # gzip, as bulk exports are often stored
        handle.seek(0)
        self._stream: IO[bytes] | gzip.GzipFile = (
            gzip.GzipFile(fileobj=handle, mode="rb") if self.compressed else handle
        )

    def _count(self, size: int) -> None:
        """Count ``size`` more bytes read; refuse the file once they pass the cap."""
        self._read += size
        if self.max_bytes is not None and self._read > self.max_bytes:
            grows = "decompresses to" if self.compressed else "grew to"
            raise InputError(
                self.source,
                f"{grows} more than {format_size(self.max_bytes)}, the limit for one input "
                f"file; {_SIZE_HINT}",
                InputProblem.TOO_LARGE,
            )

    def _room(self, want: int = _BLOCK) -> int:
        """How much one read may return: one byte past the cap is enough to know it is over."""
        if self.max_bytes is None:
            return want
        return min(want, self.max_bytes - self._read + 1)

    def _damaged(self) -> InputError:
        return InputError(self.source, "is a damaged gzip file; re-export or re-download it")

    def read(self) -> bytes:
        """Everything (at most ``max_bytes``), held once: a plain file is read in one piece of
        its known size; gzip, whose size is unknown, is gathered in blocks (``getvalue`` hands
        over the buffer without a copy)."""
        try:
            if not self.compressed:
                data = self._stream.read(self._room(self.size + 1))
                self._count(len(data))
                while block := self._stream.read(self._room()):  # the file grew meanwhile
                    self._count(len(block))
                    data += block
                return data
            with io.BytesIO() as gathered:
                while block := self._stream.read(self._room()):
                    self._count(len(block))
                    gathered.write(block)
                return gathered.getvalue()
        except (OSError, EOFError, zlib.error):
            raise self._damaged() from None

    def lines(self) -> Iterator[bytes]:
        """The lines one by one (each with its line break), never more than ``max_bytes`` in all:
        a line is read in blocks, so an endless line stops at the cap as the file does."""
        try:
            while True:
                room = sys.maxsize if self.max_bytes is None else self.max_bytes - self._read
                line, length = read_line(self._stream, room, skip=False)
                self._count(length)  # a line that did not fit in the room passes the cap
                if line is None or not length:
                    return
                yield line
        except (OSError, EOFError, zlib.error):
            raise self._damaged() from None

    def rewind(self) -> None:
        self._file.seek(0)
        self._read = 0
        if self.compressed:
            self._stream = gzip.GzipFile(fileobj=self._file, mode="rb")


def read_line(
    handle: IO[bytes] | gzip.GzipFile, limit: int, *, skip: bool = True
) -> tuple[bytes | None, int]:
    """The next line of ``handle`` (with its line break) and its length; ``(b"", 0)`` at the end.

    A line longer than ``limit`` is never held: it is read past in blocks (``(None, length)``),
    or with ``skip=False`` left at the first block past the limit (``(None, bytes read)``).
    """
    first = handle.readline(_BLOCK)
    if first.endswith(b"\n") or len(first) < _BLOCK:  # the whole line: the usual case
        return (first if len(first) <= limit else None), len(first)
    length = len(first)
    gathered: io.BytesIO | None = None
    if length <= limit:
        gathered = io.BytesIO()
        gathered.write(first)
    while gathered is not None or skip:
        block = handle.readline(_BLOCK)
        length += len(block)
        if gathered is not None:
            if length <= limit:
                gathered.write(block)
            else:
                gathered = None
        if not block or block.endswith(b"\n"):
            break
    # getvalue hands over the buffer without a copy
    return (gathered.getvalue() if gathered is not None else None), length


@contextmanager
def open_input(path: str | os.PathLike[str], max_bytes: int | None) -> Iterator[InputStream]:
    """The one way an input file is opened (see the module docstring); raises
    :class:`InputError` for a file that is not regular, not readable or over ``max_bytes``."""
    handle = open_regular(path)
    try:
        yield InputStream(os.fspath(path), handle, max_bytes)
    finally:
        handle.close()


def read_input(path: str | os.PathLike[str], max_bytes: int | None) -> bytes:
    """The whole content of one input file (gunzipped), at most ``max_bytes``."""
    with open_input(path, max_bytes) as stream:
        return stream.read()


class InputKind(StrEnum):
    BUNDLE = "bundle"
    RESOURCE = "resource"
    CDS_HOOKS_REQUEST = "cds-hooks-request"
    NDJSON = "ndjson"


# ------------------------------------------------------------------------ reading a file


@dataclass(frozen=True, slots=True)
class InputDocument:
    """The resources of one input file and where each one sat."""

    source: str  # the path as given
    kind: InputKind
    resources: tuple[SourcedResource, ...]
    issues: tuple[MappingIssue, ...] = ()
    next_links: tuple[str, ...] = ()  # searchset "next" links: the input is one page of more
    context_patient: str | None = None  # CDS Hooks context.patientId ("Patient/x")
    bundle_type: str | None = None


def load_path(
    path: str | os.PathLike[str], *, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES
) -> InputDocument:
    """Read ``path`` and find its resources; raise :class:`InputError` if it is unusable.

    A file named ``*.ndjson`` / ``*.jsonl`` (optionally ``.gz``) is read line by line; any other
    is read whole. Either way no more than ``max_bytes`` (decompressed) is read.
    """
    source = os.fspath(path)
    with open_input(source, max_bytes) as stream:
        if source.lower().endswith(_NDJSON_SUFFIXES):
            document = _load_ndjson(stream.lines(), source, fallback=True)
            if document is not None:
                return document
            stream.rewind()  # no line was a resource: read it whole, to say what it is
        raw = stream.read()
    return load_bytes(raw, source, max_bytes=max_bytes)


def load_bytes(
    raw: bytes, source: str, *, max_bytes: int | None = DEFAULT_MAX_FILE_BYTES
) -> InputDocument:
    """Like :func:`load_path` for bytes already in memory (``source`` names them in messages);
    gzip is decompressed up to ``max_bytes``."""
    if raw.startswith(b"\x1f\x8b"):  # gzip, as bulk-data exports are often stored
        with io.BytesIO(raw) as handle:
            stream = InputStream(source, handle, max_bytes)
            raw = stream.read()
    start = len(_BOM) if raw.startswith(_BOM) else 0
    # The checks below look at the bytes in place: a copy of a large input would double it.
    if _BLANK.fullmatch(raw, start):
        raise InputError(source, "file is empty; expected FHIR JSON or NDJSON")
    if _XML.match(raw, start):
        raise InputError(
            source, "looks like XML; this tool reads FHIR JSON, export the data as JSON"
        )
    try:
        document = orjson.loads(memoryview(raw)[start:])
    except orjson.JSONDecodeError as exc:
        bad_byte = _first_non_utf8(raw)
        if bad_byte is not None:
            raise InputError(
                source, f"is not UTF-8 text (bad byte at offset {bad_byte}); save it as UTF-8 JSON"
            ) from None
        if source.lower().endswith(_NDJSON_SUFFIXES) or _NDJSON_START.match(raw, start):
            found = _load_ndjson(io.BytesIO(raw), source, fallback=False)
            assert found is not None  # fallback=False raises instead
            return found
        raise InputError(
            source,
            f"is not valid JSON (line {exc.lineno}, column {exc.colno}); "
            "expected a FHIR resource, a Bundle, a CDS Hooks request or NDJSON",
        ) from None
    return load_json(document, source)


def load_json(document: object, source: str) -> InputDocument:
    """Classify one parsed JSON document (resource, Bundle or CDS Hooks request)."""
    if isinstance(document, list):
        raise NotFhirError(
            source,
            "is a JSON array; expected one FHIR resource, a Bundle, a CDS Hooks request, "
            "or NDJSON (one resource per line)",
        )
    if not isinstance(document, Mapping):
        raise NotFhirError(source, "is not a JSON object; expected FHIR JSON")
    found = Collected()
    resource_type = document.get("resourceType")
    if isinstance(resource_type, str) and resource_type:
        if resource_type == "Bundle":
            collect_bundle(document, found)
            bundle_type = document.get("type")
            return _document(
                source,
                InputKind.BUNDLE,
                found,
                bundle_type if isinstance(bundle_type, str) else None,
            )
        collect_resource(document, found, "resource")
        return _document(source, InputKind.RESOURCE, found)
    if "cards" in document or "services" in document or "feedback" in document:
        raise NotFhirError(
            source,
            "is a CDS Hooks response or feedback body, not a request or FHIR data; "
            "give the request the EHR sent, or a Bundle",
        )
    if _CDS_REQUEST_KEYS.intersection(document):
        collect_cds_request(document, found)
        return _document(source, InputKind.CDS_HOOKS_REQUEST, found)
    raise NotFhirError(
        source,
        "is JSON but not FHIR (no resourceType) and not a CDS Hooks request (no context or "
        "prefetch); give a Bundle, a resource, a CDS Hooks request or NDJSON",
    )


def _document(
    source: str, kind: InputKind, found: Collected, bundle_type: str | None = None
) -> InputDocument:
    return InputDocument(
        source=source,
        kind=kind,
        resources=tuple(found.resources),
        issues=tuple(found.issues),
        next_links=tuple(found.next_links),
        context_patient=found.context_patient,
        bundle_type=bundle_type,
    )


def _first_non_utf8(raw: bytes) -> int | None:
    """The offset of the first byte that is not UTF-8, decoded a block at a time (decoding a
    large input at once would hold a second, larger copy of it)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    view = memoryview(raw)
    for offset in range(0, len(raw), _BLOCK):
        pending = len(decoder.getstate()[0])
        try:
            decoder.decode(view[offset : offset + _BLOCK], final=offset + _BLOCK >= len(raw))
        except UnicodeDecodeError as bad:
            return offset - pending + bad.start
    return None


def _load_ndjson(lines: Iterable[bytes], source: str, *, fallback: bool) -> InputDocument | None:
    """One resource per line. When no line is a resource: None if ``fallback`` (the caller reads
    the file whole to say what it is), else :class:`InputError`."""
    found = Collected()
    good = bad = 0
    for number, line in enumerate(lines, start=1):
        if number == 1 and line.startswith(_BOM):
            line = line[len(_BOM) :]
        if _BLANK.fullmatch(line):
            continue
        location = f"line {number}"
        try:
            resource: Any = orjson.loads(line)
        except orjson.JSONDecodeError as exc:
            bad += 1
            found.issues.append(
                MappingIssue(
                    location,
                    f"not valid JSON (column {exc.colno}); line skipped",
                    code=IssueCode.INVALID_JSON,
                )
            )
            continue
        if not isinstance(resource, Mapping) or not isinstance(resource.get("resourceType"), str):
            bad += 1
            found.issues.append(
                MappingIssue(
                    location,
                    "not a FHIR resource (no resourceType); line skipped",
                    code=IssueCode.NOT_A_RESOURCE,
                )
            )
            continue
        good += 1
        collect_resource(resource, found, location)
    if good == 0:
        if fallback:
            return None
        raise InputError(
            source,
            f"no line is a FHIR resource ({bad} unreadable lines); expected NDJSON with one "
            "resource per line",
        )
    return _document(source, InputKind.NDJSON, found)


def map_document(document: InputDocument, *, strict: bool = False) -> TherapyRecord:
    """Map a loaded input to a :class:`TherapyRecord` (fast path; ``strict`` validates first)."""
    found = Collected(
        resources=list(document.resources),
        issues=list(document.issues),
        next_links=list(document.next_links),
        context_patient=document.context_patient,
    )
    return map_collected(found, strict=strict)


def map_path(path: str | os.PathLike[str], *, strict: bool = False) -> TherapyRecord:
    """:func:`load_path` + :func:`map_document` in one call (raises :class:`InputError`)."""
    return map_document(load_path(path), strict=strict)
