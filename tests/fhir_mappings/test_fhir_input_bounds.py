"""Bounded reading of input files (issue 17, item 13): only regular files, a size cap checked
before reading, gzip decompressed only up to the cap, NDJSON never held whole."""

from __future__ import annotations

import gzip
import io
import json
import os
import socket
import tracemalloc
import zlib
from collections.abc import Callable
from pathlib import Path

import pytest
from fhir_builders import procedure

from fhir_mappings import (
    InputDocument,
    InputError,
    InputKind,
    InputProblem,
    load_path,
    map_document,
    read_input,
    read_line,
)

MB = 1_000_000


def _peak_bytes(action: Callable[[], object]) -> int:
    """The most memory Python allocated at once while ``action`` ran."""
    tracemalloc.start()
    try:
        action()
    except InputError:
        pass
    finally:
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
    return peak


def _zeros_gzip(path: Path, size: int, line: bytes = b"") -> Path:
    """``size`` bytes of zeros (or of ``line`` repeated), gzip-compressed to about 1/1000."""
    block = (line * (MB // len(line) + 1))[:MB] if line else bytes(MB)
    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    with path.open("wb") as out:
        for _ in range(size // MB):
            out.write(compressor.compress(block))
        out.write(compressor.flush())
    return path


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_a_device_is_refused_by_type() -> None:
    # before: read as an empty file ("file is empty"); /dev/zero would never end
    with pytest.raises(InputError) as info:
        load_path("/dev/null", max_bytes=MB)
    assert info.value.code is InputProblem.NOT_A_REGULAR_FILE
    assert str(info.value) == (
        "/dev/null: is a device, not a regular file; save the data to a file and give that file"
    )


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
def test_a_fifo_is_refused_without_waiting_for_a_writer(tmp_path: Path) -> None:
    fifo = tmp_path / "bundle.json"
    os.mkfifo(fifo)
    # (the CLI tests run this case in a subprocess with a timeout: before, the open blocked)
    with pytest.raises(InputError) as info:
        load_path(fifo)
    assert info.value.code is InputProblem.NOT_A_REGULAR_FILE
    assert "named pipe (FIFO)" in str(info.value)
    assert str(info.value).startswith(str(fifo))


@pytest.mark.skipif(not hasattr(socket, "AF_UNIX"), reason="no Unix sockets here")
def test_a_socket_is_refused_by_type(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    with socket.socket(socket.AF_UNIX) as server:
        try:
            server.bind(str(path))
        except OSError:
            pytest.skip("socket path too long here")
        with pytest.raises(InputError, match="is a socket, not a regular file") as info:
            load_path(path)
    assert info.value.code is InputProblem.NOT_A_REGULAR_FILE


def test_a_file_over_the_cap_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_bytes(json.dumps(procedure()).encode().ljust(2_000))
    assert load_path(path, max_bytes=2_000).kind is InputKind.RESOURCE  # at the cap: read
    with pytest.raises(InputError) as info:
        load_path(path, max_bytes=1_999)
    assert info.value.code is InputProblem.TOO_LARGE
    message = str(info.value)
    assert message.startswith(f"{path}: is 2.0KB, over the 2.0KB limit for one input file;")
    assert "--max-file-size" in message
    assert "THERAPY_CDS_MAX_FILE_SIZE" in message
    with pytest.raises(InputError, match=r"over the 1\.0KB limit"):
        load_path(tmp_path / "big.json", max_bytes=1_000)


@pytest.mark.parametrize("name", ["bomb.json.gz", "bomb.ndjson.gz"])
def test_a_gzip_bomb_stops_at_the_cap(tmp_path: Path, name: str) -> None:
    # 50 MB of zeros in about 50 KB; the cap is 10 MB: refused once 10 MB came out, and the
    # decompressed bytes never all sit in memory (before: 50 MB, then a copy to decode them).
    bomb = _zeros_gzip(tmp_path / name, 50 * MB)
    assert bomb.stat().st_size < 100_000
    peak = _peak_bytes(lambda: load_path(bomb, max_bytes=10 * MB))
    with pytest.raises(InputError) as info:
        load_path(bomb, max_bytes=10 * MB)
    assert info.value.code is InputProblem.TOO_LARGE
    assert str(info.value).startswith(f"{bomb}: decompresses to more than 10.0MB, the limit")
    assert peak < 15 * MB, peak


def test_a_gzip_bomb_of_lines_stops_at_the_cap(tmp_path: Path) -> None:
    # blank lines of 100 bytes: read one by one, and still no more than the cap in all
    bomb = _zeros_gzip(tmp_path / "Procedure.ndjson.gz", 50 * MB, line=b" " * 99 + b"\n")
    peak = _peak_bytes(lambda: load_path(bomb, max_bytes=10 * MB))
    with pytest.raises(InputError, match=r"decompresses to more than 10\.0MB"):
        load_path(bomb, max_bytes=10 * MB)
    assert peak < 2 * MB, peak


def test_gzip_within_the_cap_is_read(tmp_path: Path) -> None:
    text = json.dumps(procedure(id="a")).encode()
    path = tmp_path / "one.json.gz"
    path.write_bytes(gzip.compress(text))
    assert read_input(path, len(text)) == text
    with pytest.raises(InputError, match="decompresses to more than"):
        read_input(path, len(text) - 1)


def test_ndjson_is_read_line_by_line(tmp_path: Path) -> None:
    # 20 MB of NDJSON whose lines are mostly white space inside each object (valid JSON that
    # the parse drops): what is kept is small, so the peak shows whether the text was held
    # whole (before: the 20 MB file, then a list of its lines, at once).
    padding = " " * 20_000
    path = tmp_path / "Procedure.ndjson"
    with path.open("w") as out:
        for n in range(1_000):
            body = json.dumps(procedure(id=f"p{n}"))
            out.write(body[:-1] + "," + padding + '"note": []}\n')
    size = path.stat().st_size
    assert size > 20 * MB
    documents: list[InputDocument] = []
    peak = _peak_bytes(lambda: documents.append(load_path(path, max_bytes=100 * MB)))
    assert peak < size / 4, (peak, size)
    document = documents[0]
    assert document.kind is InputKind.NDJSON
    assert len(map_document(document).services) == 1_000


def test_ndjson_over_the_cap_is_refused_by_its_size(tmp_path: Path) -> None:
    path = tmp_path / "Procedure.ndjson"
    path.write_text((json.dumps(procedure()) + "\n") * 10)
    with pytest.raises(InputError, match="over the") as info:
        load_path(path, max_bytes=100)
    assert info.value.code is InputProblem.TOO_LARGE


def test_read_line_holds_a_long_line_only_within_its_limit() -> None:
    block = 1 << 20
    lines = [b"a\n", b"x" * (3 * block + 5) + b"\n", b"y" * (2 * block) + b"\n", b"end"]
    handle = io.BytesIO(b"".join(lines))
    assert [read_line(handle, 10 * block) for _ in lines] == [(x, len(x)) for x in lines]
    assert read_line(handle, 10 * block) == (b"", 0)
    handle.seek(0)
    found = [read_line(handle, 2 * block) for _ in lines]
    assert found == [(b"a\n", 2), (None, len(lines[1])), (None, len(lines[2])), (b"end", 3)]
    handle.seek(2)
    assert read_line(handle, 100, skip=False) == (None, block)  # stops at the first block
