"""File helpers: atomic writes, JSON, hashing and tolerant reading of text streams.

Everything mtkit writes goes to a temporary name in the same directory and is renamed into place,
so a crash or a full disk never leaves a truncated file where a good one was.
"""

from __future__ import annotations

import codecs
import contextlib
import hashlib
import io
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
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


def write_lines(path: str | Path, lines: list[str]) -> None:
    with atomic_write(path) as handle:
        for line in lines:
            handle.write(line + "\n")


def write_json(path: str | Path, obj: Any) -> None:
    write_text(path, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


def read_json(path: str | Path) -> Any:
    path = Path(path)
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError("file not found", path) from None
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"not valid JSON ({exc})", path) from None


def sha256_file(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


class DecodeCounter:
    """Counts the invalid UTF-8 sequences replaced by U+FFFD while reading a text stream."""

    def __init__(self) -> None:
        self.replaced = 0


def open_text_input(
    source: str | Path, errors: str = "replace", counter: DecodeCounter | None = None
) -> IO[str]:
    """Open a file (or ``-`` for stdin) as text: UTF-8 with or without BOM, any line ending.

    ``errors`` is ``replace`` (invalid bytes become U+FFFD and are counted) or ``strict``.
    """
    if str(source) == "-":
        raw: BinaryIO = sys.stdin.buffer
    else:
        try:
            raw = open(source, "rb")  # noqa: SIM115 - closed with the wrapper
        except FileNotFoundError:
            raise DataError("file not found", source) from None
        except IsADirectoryError:
            raise DataError("is a directory, expected a text file", source) from None
    handler = "strict"
    if errors == "replace":
        handler = _counting_handler(counter) if counter is not None else "replace"
    # newline=None gives universal newlines: \n, \r\n and a lone \r all end a line.
    return io.TextIOWrapper(raw, encoding="utf-8-sig", errors=handler, newline=None)


def _counting_handler(counter: DecodeCounter) -> str:
    """Register (once per counter) a codec error handler that replaces and counts bad bytes."""
    name = f"mtkit-count-{id(counter)}"

    def handler(exc: UnicodeError) -> tuple[str, int]:
        assert isinstance(exc, UnicodeDecodeError)
        counter.replaced += 1
        return "\ufffd", exc.end

    codecs.register_error(name, handler)
    return name
