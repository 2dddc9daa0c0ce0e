"""File helpers: atomic writes, JSON, hashing and tolerant reading of text streams.

Everything mtkit writes goes to a temporary name in the same directory and is renamed into place,
so a crash or a full disk never leaves a truncated file where a good one was.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any, BinaryIO

from mtkit.errors import DataError, MtkitError

_UMASK = os.umask(0)
os.umask(_UMASK)


@contextlib.contextmanager
def atomic_write(path: str | Path, binary: bool = False) -> Iterator[IO[Any]]:
    """Open a temporary file beside ``path``; rename it over ``path`` only if the block succeeds."""
    path = Path(path)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    tmp = Path(tmp_name)
    try:
        with (
            open(fd, "wb") if binary else open(fd, "w", encoding="utf-8", newline="\n")
        ) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_text(path: str | Path, text: str) -> None:
    with atomic_write(path) as handle:
        handle.write(text)


def write_lines(path: str | Path, lines: Iterable[str]) -> None:
    with atomic_write(path) as handle:
        for line in lines:
            handle.write(line + "\n")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def append_json_line(path: str | Path, obj: Any) -> None:
    """Add one JSON object as a line to a log such as metrics.jsonl (a line is written whole)."""
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(json.dumps(obj, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path) from None


def read_bytes(path: str | Path, what: str = "file") -> bytes:
    """A whole (small) file's bytes; a missing one is a ``DataError`` naming it as ``what``."""
    try:
        return Path(path).read_bytes()
    except FileNotFoundError:
        raise DataError(f"{what} not found", path) from None


def file_digest(path: str | Path, algorithm: str = "sha256") -> str:
    """Hex digest of a file's bytes, read in blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def check_output_dir(path: str | Path, force: bool, what: str) -> Path:
    """Refuse an existing non-empty ``path`` unless ``force``; touch nothing either way."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())) and not force:
        raise MtkitError(
            f"{what} {path} already exists and is not empty; "
            "choose another path or pass --force to replace it"
        )
    return path


@contextlib.contextmanager
def staged_dir(path: str | Path, force: bool, what: str) -> Iterator[Path]:
    """Build a directory beside ``path`` and swap it into place only when the block succeeds.

    The old ``path`` (replaced only with ``force``) stays as it was until the new one is
    complete, so a failed or interrupted rebuild loses nothing; the staging directory is
    removed on failure.
    """
    path = check_output_dir(path, force, what)
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.new-", dir=path.parent))
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    os.chmod(staging, 0o777 & ~_UMASK)  # mkdtemp creates 0700; give the usual permissions
    replace_dir(staging, path)


def replace_dir(new: Path, path: Path) -> None:
    """Put the directory ``new`` at ``path`` by renames; whatever was at ``path`` stays there
    until the swap and is then removed."""
    if path.exists() or path.is_symlink():
        old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
        os.replace(path, old / "replaced")  # a rename: the old one is kept until the swap
        os.replace(new, path)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(new, path)


def prepare_output_dir(path: str | Path, force: bool, what: str) -> Path:
    """Refuse to reuse a non-empty directory unless ``force``; with ``force`` remove it first."""
    path = Path(path)
    if path.exists() and (not path.is_dir() or any(path.iterdir())):
        if not force:
            raise MtkitError(
                f"{what} {path} already exists and is not empty; "
                "choose another path or pass --force to replace it"
            )
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
    path.mkdir(parents=True, exist_ok=True)
    return path


@dataclass
class ReadStats:
    """What reading a text input had to repair."""

    lines: int = 0
    replaced: int = 0  # lines in which invalid UTF-8 was replaced by U+FFFD


def line_blocks(read: Callable[[int], bytes], chunk_size: int = 1 << 16) -> Iterator[list[bytes]]:
    """The lines of a byte stream without their line ends, a list per read (whatever the read
    completed, so a pipe's lines come as they arrive). ``\n``, ``\r\n`` or a lone ``\r`` end
    a line; a leading UTF-8 byte-order mark is dropped; a last line without an end counts."""
    block = b""
    while len(block) < 3 and (more := read(chunk_size)):
        block += more
    block = block.removeprefix(b"\xef\xbb\xbf")
    pending = b""  # an unfinished line, or a line ending in \r that may be the first half of \r\n
    while True:
        if block:
            data = pending + block
            lines = data.splitlines()
            pending = b""
            if not data.endswith(b"\n"):
                pending = lines.pop() + (b"\r" if data.endswith(b"\r") else b"")
            if lines:
                yield lines
        block = read(chunk_size)
        if not block:
            break
    if pending:
        yield pending.splitlines()


def read_lines(
    source: str | Path, errors: str = "replace", stats: ReadStats | None = None, chunk_size: int = 1 << 16
) -> Iterator[str]:
    """Lines of a file, or of stdin for ``-``, without their line ends; streamed in bounded memory.

    UTF-8 with or without a byte-order mark; ``\n``, ``\r\n`` or a lone ``\r`` end a line.
    ``errors="strict"`` stops at invalid UTF-8 naming the file and line; ``"replace"`` turns it
    into U+FFFD and counts the line in ``stats``.
    """
    stats = stats if stats is not None else ReadStats()
    if errors not in ("strict", "replace"):
        raise ValueError(f"errors must be strict or replace, not {errors!r}")
    name = "<stdin>" if str(source) == "-" else str(source)
    with _open_binary(source) as handle:
        read = getattr(handle, "read1", handle.read)  # read1: what a pipe has, without waiting
        for lines in line_blocks(read, chunk_size):
            for raw in lines:
                yield _decode(raw, errors, stats, name)


def _decode(raw: bytes, errors: str, stats: ReadStats, name: str) -> str:
    stats.lines += 1
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        if errors == "strict":
            raise DataError(
                f"invalid UTF-8 at byte {exc.start + 1} (use --encoding-errors replace to repair)", name, stats.lines
            ) from None
        stats.replaced += 1
        return raw.decode("utf-8", errors="replace")


@contextlib.contextmanager
def _open_binary(source: str | Path) -> Iterator[BinaryIO]:
    if str(source) == "-":
        yield sys.stdin.buffer
        return
    try:
        handle = open(source, "rb")  # noqa: SIM115
    except FileNotFoundError:
        raise DataError("file not found", source) from None
    except IsADirectoryError:
        raise DataError("is a directory, expected a text file", source) from None
    except PermissionError:
        raise DataError("permission denied", source) from None
    with handle:
        yield handle
