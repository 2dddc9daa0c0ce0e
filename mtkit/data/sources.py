"""Where parallel text comes from, read as a stream of raw line blocks in bounded memory.

A source is the book's download, a ``.zip`` (its largest ``.txt``/``.tsv`` member, streamed), a
TSV file (2 columns, or 3: manythings' attribution) or two files given by their common prefix
(``corpus`` means ``corpus.en`` and ``corpus.fr``, fairseq's convention). Any file may be gzip,
xz or bzip2 compressed: that is recognised from its first bytes, not its name. Compressed data
is refused when it expands beyond ``ReadLimits`` (a likely decompression bomb), and binary data
is refused before any of it is read as text.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import hashlib
import lzma
import os
import sys
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from mtkit.errors import DataError, MtkitError
from mtkit.fileio import file_digest, line_blocks

BOOK_URL = "http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip"
BOOK_SHA1 = "94646ad1522d915e7b0f9296181140edcf86a4f5"
SNIFF_BYTES = 1 << 16
RATIO_AFTER = 1 << 20  # bytes expanded before the ratio is judged (compressed input is read ahead)
READ_BYTES = 1 << 20

_COMPRESSED = {b"\x1f\x8b": "gzip", b"\xfd7zXZ\x00": "xz", b"BZh": "bzip2"}
_OPENERS = {"gzip": lambda f: gzip.GzipFile(fileobj=f, mode="rb"), "xz": lzma.LZMAFile, "bzip2": bz2.BZ2File}
_UNSUPPORTED = {
    b"\x28\xb5\x2f\xfd": "zstd-compressed: decompress it first (zstd -d) or recompress it with gzip or xz",
    b"7z\xbc\xaf\x27\x1c": "a 7z archive: extract it first",
    b"Rar!\x1a\x07": "a RAR archive: extract it first",
    b"\x04\x22\x4d\x18": "lz4-compressed: decompress it first (lz4 -d)",
}
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")


@dataclass
class ReadLimits:
    """Compressed input may expand at most ``max_ratio`` times and to at most ``max_bytes``."""

    max_bytes: int = 64 << 30
    max_ratio: float = 200.0


@dataclass
class Source:
    """One opened source: its raw lines come in blocks; ``origin`` is what the manifest records."""

    name: str
    kind: str  # "tsv" (one file of pairs) or "parallel" (two files, line by line)
    origin: dict[str, str] = field(default_factory=dict)
    _streams: list[_Stream] = field(default_factory=list)

    def blocks(self, lines: int) -> Iterator[list[bytes] | tuple[list[bytes], list[bytes]]]:
        """Blocks of up to ``lines`` raw lines (line ends removed); for parallel files a pair of
        equally long blocks. Files of different lengths are refused when the shorter one ends."""
        if self.kind == "tsv":
            yield from self._streams[0].blocks(lines)
            return
        src, tgt = self._streams
        for src_block in src.blocks(lines):
            tgt_block = tgt.take(len(src_block))
            if len(tgt_block) < len(src_block):
                self._length_mismatch(src.count_rest() + src.lines_read, tgt.lines_read)
            yield src_block, tgt_block
        if tgt.take(1):
            self._length_mismatch(src.lines_read, tgt.lines_read + tgt.count_rest())

    def _length_mismatch(self, src_lines: int, tgt_lines: int) -> None:
        src, tgt = self._streams
        raise DataError(
            f"parallel files differ in length: {src.name} has {src_lines:,} lines, {tgt.name} has {tgt_lines:,}"
        )

    def finish(self, complete: bool) -> None:
        """Record each file's compression and sha256: hashed on the way when read to its end,
        read again when not (``--max-examples`` stopped early)."""
        for prefix, stream in zip(("", "target_"), self._streams):
            self.origin[f"{prefix}compression"] = stream.compression
            self.origin[f"{prefix}sha256"] = stream.digest() if complete or stream.compression == "zip" else file_digest(stream.name)

    def close(self) -> None:
        for stream in self._streams:
            stream.close()


class _Stream:
    """A file's lines: decompressed, guarded, hashed on the way."""

    def __init__(self, name: str, handle: BinaryIO, closers: list, digest: Any, compression: str) -> None:
        self.name, self.handle, self.closers, self._digest = name, handle, closers, digest
        self.compression = compression
        self.lines_read = 0
        self._blocks = line_blocks(handle.read, READ_BYTES)
        self._pending: list[bytes] = []

    def blocks(self, lines: int) -> Iterator[list[bytes]]:
        while block := self.take(lines):
            yield block

    def take(self, n: int) -> list[bytes]:
        """Up to ``n`` next lines."""
        while len(self._pending) < n:
            more = next(self._blocks, None)
            if more is None:
                break
            self._pending = self._pending + more if self._pending else more
        block, self._pending = self._pending[:n], self._pending[n:]
        self.lines_read += len(block)
        return block

    def count_rest(self) -> int:
        return len(self._pending) + sum(len(block) for block in self._blocks)

    def digest(self) -> str:
        return self._digest if isinstance(self._digest, str) else self._digest.hexdigest()

    def close(self) -> None:
        for close in reversed(self.closers):
            close()


class _Hashing:
    """Reads a file and hashes its bytes as they pass (so a large file is read once)."""

    def __init__(self, handle: BinaryIO) -> None:
        self.handle, self.hash = handle, hashlib.sha256()

    def read(self, size: int = -1) -> bytes:
        data = self.handle.read(size)
        self.hash.update(data)
        return data

    def tell(self) -> int:
        return self.handle.tell()


class _Guarded:
    """Decompressed bytes, refused once they exceed the size or ratio limits."""

    def __init__(self, stream: BinaryIO, compressed: _Hashing, name: str, limits: ReadLimits) -> None:
        self.stream, self.compressed, self.name, self.limits = stream, compressed, name, limits
        self.expanded = 0

    def read(self, size: int = -1) -> bytes:
        data = self.stream.read(size)
        self.expanded += len(data)
        if self.expanded > self.limits.max_bytes:
            raise DataError(
                f"expands beyond {_size(self.limits.max_bytes)}: refused (raise --max-expanded-size if it is genuine)",
                self.name,
            )
        ratio = self.expanded / max(1, self.compressed.tell())
        if self.expanded >= RATIO_AFTER and ratio > self.limits.max_ratio:
            raise DataError(
                f"expands more than {self.limits.max_ratio:g}x: refused as a likely decompression bomb "
                "(raise --max-expand-ratio if it is genuine)",
                self.name,
            )
        return data


def _size(n: int) -> str:
    for unit, shift in (("GiB", 30), ("MiB", 20), ("KiB", 10)):
        if n >= 1 << shift:
            return f"{n / (1 << shift):g} {unit}"
    return f"{n} bytes"


def parse_size(text: str) -> int:
    """Bytes from ``500M``, ``64G``, ``1.5T`` or a plain number."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    units = {"K": 10, "M": 20, "G": 30, "T": 40}
    shift = units.get(text[-1:], 0)
    try:
        value = float(text[:-1] if shift else text)
    except ValueError:
        raise MtkitError(f"cannot read {text!r} as a size (e.g. 500M, 64G)") from None
    return int(value * (1 << shift))


def cache_dir() -> Path:
    """``$MTKIT_CACHE``, else the platform's per-user cache directory."""
    if os.environ.get("MTKIT_CACHE"):
        return Path(os.environ["MTKIT_CACHE"])
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA", Path.home() / "AppData" / "Local"))
        return base / "mtkit" / "Cache"
    if sys.platform == "darwin":
        return Path.home() / "Library" / "Caches" / "mtkit"
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "mtkit"


def download(url: str, sha1: str, progress: bool = True) -> Path:
    """Fetch ``url`` into the cache (once), verify its sha1, return the local path."""
    target = cache_dir() / url.rsplit("/", 1)[-1]
    if target.exists() and file_digest(target, "sha1") == sha1:
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(target.name + ".part")
    try:
        with urllib.request.urlopen(url, timeout=30) as response, open(partial, "wb") as out:
            total = int(response.headers.get("Content-Length") or 0) or None
            _copy_with_progress(response, out, total, f"downloading {target.name}", progress)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        reason = getattr(exc, "reason", exc)
        raise MtkitError(
            f"cannot download {url} ({reason}); pass a local copy instead, "
            "e.g. `mtkit preprocess path/to/fra-eng.zip --out DATA_DIR`"
        ) from None
    actual = file_digest(partial, "sha1")
    if actual != sha1:
        partial.unlink(missing_ok=True)
        raise MtkitError(f"download of {url} has sha1 {actual}, expected {sha1}; removed it")
    os.replace(partial, target)
    return target


def _copy_with_progress(response, out, total: int | None, label: str, progress: bool) -> None:
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        DownloadColumn(),
        TransferSpeedColumn(),
        disable=not progress,
        transient=True,
    ) as bar:
        task = bar.add_task(label, total=total)
        for block in iter(lambda: response.read(1 << 16), b""):
            out.write(block)
            bar.advance(task, len(block))


@contextlib.contextmanager
def open_source(
    spec: str | Path | None, src_lang: str, tgt_lang: str, limits: ReadLimits = ReadLimits(), progress: bool = True
) -> Iterator[Source]:
    """Open the book's download (``spec`` None; cached, sha1-verified), a ``.zip``, a TSV or two
    files given by their prefix; close them at the end."""
    source = _open(spec, src_lang, tgt_lang, limits, progress)
    try:
        yield source
    finally:
        source.close()


def _open(spec: str | Path | None, src_lang: str, tgt_lang: str, limits: ReadLimits, progress: bool) -> Source:
    if spec is None:
        # MTKIT_DATA_URL names a mirror of the same archive (its sha1 is still checked).
        url = os.environ.get("MTKIT_DATA_URL") or BOOK_URL
        source = _open_zip(download(url, BOOK_SHA1, progress), limits)
        source.origin["url"] = url
        return source
    path = Path(spec)
    if path.is_dir():
        raise DataError("is a directory; expected a .zip, a .tsv/.txt of pairs or a file prefix", path)
    if path.is_file():
        with open(path, "rb") as handle:
            head = handle.read(8)
        if head.startswith(b"PK\x03\x04") or path.suffix.lower() == ".zip":
            return _open_zip(path, limits)
        return Source(str(path), "tsv", {"path": str(path)}, [_open_file(path, limits)])
    src_file, tgt_file = _find_side(path, src_lang), _find_side(path, tgt_lang)
    if src_file and tgt_file:
        streams = [_open_file(src_file, limits)]
        try:
            streams.append(_open_file(tgt_file, limits))
        except BaseException:
            streams[0].close()
            raise
        return Source(str(path), "parallel", {"path": str(src_file), "target_path": str(tgt_file)}, streams)
    raise DataError(
        f"file not found (nor the parallel files {path.name}.{src_lang} and {path.name}.{tgt_lang})", path
    )


def _find_side(prefix: Path, lang: str) -> Path | None:
    for suffix in ("", ".gz", ".xz", ".bz2"):
        candidate = prefix.with_name(f"{prefix.name}.{lang}{suffix}")
        if candidate.is_file():
            return candidate
    return None


def _open_file(path: Path, limits: ReadLimits) -> _Stream:
    """A plain or compressed file of text lines."""
    try:
        raw = open(path, "rb")  # noqa: SIM115 - closed by the stream
    except PermissionError:
        raise DataError("permission denied", path) from None
    hashing = _Hashing(raw)
    closers = [raw.close]
    try:
        head = raw.read(8)
        raw.seek(0)
        for magic, reason in _UNSUPPORTED.items():
            if head.startswith(magic):
                raise DataError(f"is {reason}", path)
        compression = next((name for magic, name in _COMPRESSED.items() if head.startswith(magic)), None)
        handle: BinaryIO = hashing  # type: ignore[assignment]
        if compression:
            decompressed = _OPENERS[compression](hashing)
            closers.append(decompressed.close)
            handle = _Guarded(decompressed, hashing, str(path), limits)  # type: ignore[assignment]
        return _Stream(str(path), _Sniffed(handle, str(path), compression), closers, hashing.hash, compression or "none")
    except BaseException:
        raw.close()
        raise


class _Sniffed:
    """Checks the first bytes of a text stream: binary data (NUL bytes) or UTF-16 is refused."""

    def __init__(self, handle: BinaryIO, name: str, compression: str | None) -> None:
        self.handle, self.name, self.compression = handle, name, compression
        self.checked = False

    def read(self, size: int = -1) -> bytes:
        try:
            data = self.handle.read(size)
        except (OSError, EOFError, lzma.LZMAError) as exc:
            raise DataError(f"cannot decompress ({self.compression}): {exc}", self.name) from None
        if not self.checked:
            self.checked = True
            head = data[:SNIFF_BYTES]
            if head.startswith(_UTF16_BOMS):
                raise DataError("is UTF-16 text; mtkit reads UTF-8 (convert it, e.g. iconv -f UTF-16 -t UTF-8)", self.name)
            if b"\x00" in head:
                inside = f" after {self.compression} decompression" if self.compression else ""
                raise DataError(
                    f"holds binary data{inside} (NUL bytes), not text; mtkit reads UTF-8 text, "
                    "plain or gzip/xz/bzip2-compressed, and .zip archives",
                    self.name,
                )
        return data


def _open_zip(path: Path, limits: ReadLimits) -> Source:
    """The manythings/Tatoeba archive: the largest ``.txt``/``.tsv`` member other than notes."""
    try:
        archive = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, EOFError, OSError):
        raise DataError("not a valid zip archive (corrupt or truncated?)", path) from None
    try:
        members = [
            info
            for info in archive.infolist()
            if not info.is_dir()
            and info.filename.lower().endswith((".txt", ".tsv"))
            and not Path(info.filename).name.startswith(("_", "."))
        ]
        if not members:
            raise DataError("the archive holds no .txt or .tsv file of pairs", path)
        member = max(members, key=lambda info: info.file_size)
        _check_not_a_bomb(path, member, limits)
        handle = archive.open(member)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        archive.close()
        raise DataError(f"cannot read zip archive ({exc})", path) from None
    except BaseException:
        archive.close()
        raise
    name = f"{path}:{member.filename}"
    stream = _Stream(name, _ZipMember(_Sniffed(handle, name, None), path), [archive.close, handle.close], file_digest(path), "zip")
    return Source(name, "tsv", {"path": str(path), "member": member.filename}, [stream])


class _ZipMember:
    """A zip member's bytes; a damaged archive is reported as such, not as a crash."""

    def __init__(self, handle: BinaryIO, path: Path) -> None:
        self.handle, self.path = handle, path

    def read(self, size: int = -1) -> bytes:
        try:
            return self.handle.read(size)
        except (zipfile.BadZipFile, EOFError, OSError, zipfile.LargeZipFile, NotImplementedError) as exc:
            raise DataError(f"cannot read zip archive ({exc})", self.path) from None


def _check_not_a_bomb(path: Path, member: zipfile.ZipInfo, limits: ReadLimits) -> None:
    """zipfile never returns more than a member's declared size, so checking it is enough."""
    if member.file_size > limits.max_bytes:
        raise DataError(
            f"{member.filename} expands to {member.file_size:,} bytes (limit {_size(limits.max_bytes)}; "
            "raise --max-expanded-size if it is genuine): refused",
            path,
        )
    if member.compress_size and member.file_size / member.compress_size > limits.max_ratio:
        raise DataError(
            f"{member.filename} expands {member.file_size // member.compress_size}x "
            f"(limit {limits.max_ratio:g}x; raise --max-expand-ratio if it is genuine): refused as a likely zip bomb",
            path,
        )
