"""Where parallel text comes from: the book's download, a local archive, a TSV or two files.

Readers return ``Corpus`` objects: cleaned ``(source, target)`` pairs plus the lines they skipped,
counted by reason, so a bad line never stops a run.
"""

from __future__ import annotations

import os
import sys
import urllib.error
import urllib.request
import zipfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from mtkit.data.normalize import clean
from mtkit.errors import DataError, MtkitError
from mtkit.fileio import file_digest

BOOK_URL = "http://d2l-data.s3-accelerate.amazonaws.com/fra-eng.zip"
BOOK_SHA1 = "94646ad1522d915e7b0f9296181140edcf86a4f5"
# An archive member larger than this, or expanding more than MAX_ZIP_RATIO times, is refused.
MAX_ZIP_MEMBER_BYTES = 2 << 30
MAX_ZIP_RATIO = 200


@dataclass
class Corpus:
    """Cleaned parallel pairs and what was skipped on the way."""

    pairs: list[tuple[str, str]]
    origin: dict[str, str]
    dropped: Counter[str] = field(default_factory=Counter)


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


def read_corpus(source: str | Path | None, src_lang: str, tgt_lang: str, progress: bool = True) -> Corpus:
    """Read pairs from the book's download (``source`` None; cached, sha1-verified), a ``.zip``,
    a TSV or two files.

    Two files are given by their common prefix: ``corpus`` means ``corpus.en`` and ``corpus.fr``
    for languages ``en`` and ``fr`` (fairseq's convention).
    """
    if source is None:
        # MTKIT_DATA_URL names a mirror of the same archive (its sha1 is still checked).
        url = os.environ.get("MTKIT_DATA_URL") or BOOK_URL
        path = download(url, BOOK_SHA1, progress)
        corpus = read_zip(path)
        corpus.origin["url"] = url
        return corpus
    path = Path(source)
    if path.is_file():
        if zipfile.is_zipfile(path):
            return read_zip(path)
        if path.suffix.lower() == ".zip":
            raise DataError("not a valid zip archive (corrupt or truncated?)", path)
        return read_tsv(path)
    if path.is_dir():
        raise DataError("is a directory; expected a .zip, a .tsv/.txt of pairs or a file prefix", path)
    src_file = path.with_name(f"{path.name}.{src_lang}")
    tgt_file = path.with_name(f"{path.name}.{tgt_lang}")
    if src_file.is_file() and tgt_file.is_file():
        return read_parallel_files(src_file, tgt_file)
    raise DataError(
        f"file not found (nor the parallel files {src_file.name} and {tgt_file.name})", path
    )


def read_zip(path: Path) -> Corpus:
    """The manythings/Tatoeba archive: the largest ``.txt``/``.tsv`` member other than notes."""
    try:
        with zipfile.ZipFile(path) as archive:
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
            _check_not_a_bomb(path, member)
            with archive.open(member) as handle:
                data = handle.read(MAX_ZIP_MEMBER_BYTES + 1)
            if len(data) > MAX_ZIP_MEMBER_BYTES:
                raise DataError(f"{member.filename} expands beyond {MAX_ZIP_MEMBER_BYTES >> 30} GiB; refused", path)
    except (zipfile.BadZipFile, EOFError, zipfile.LargeZipFile, NotImplementedError) as exc:
        raise DataError(f"cannot read zip archive ({exc})", path) from None
    corpus = parse_tsv(data, f"{path}:{member.filename}")
    corpus.origin.update(path=str(path), member=member.filename, sha256=file_digest(path))
    return corpus


def _check_not_a_bomb(path: Path, member: zipfile.ZipInfo) -> None:
    if member.file_size > MAX_ZIP_MEMBER_BYTES:
        raise DataError(f"{member.filename} expands to {member.file_size:,} bytes; refused", path)
    if member.compress_size and member.file_size / member.compress_size > MAX_ZIP_RATIO:
        raise DataError(
            f"{member.filename} expands {member.file_size // member.compress_size}x "
            f"(limit {MAX_ZIP_RATIO}x): refused as a likely zip bomb",
            path,
        )


def read_tsv(path: Path) -> Corpus:
    corpus = parse_tsv(path.read_bytes(), str(path))
    corpus.origin.update(path=str(path), sha256=file_digest(path))
    return corpus


def parse_tsv(data: bytes, name: str) -> Corpus:
    """Pairs from tab-separated lines of 2 columns, or 3 (manythings' attribution column)."""
    corpus = Corpus(pairs=[], origin={})
    for raw in _lines(data):
        if not raw.strip():
            corpus.dropped["blank line"] += 1
            continue
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError:
            corpus.dropped["invalid UTF-8"] += 1
            continue
        columns = line.split("\t")
        if len(columns) < 2:
            corpus.dropped["no tab"] += 1
        elif len(columns) > 3:
            corpus.dropped["more than 3 columns"] += 1
        else:
            _add_pair(corpus, columns[0], columns[1])
    if not corpus.pairs:
        raise DataError(f"no usable sentence pairs ({_describe(corpus.dropped)})", name)
    return corpus


def read_parallel_files(src_file: Path, tgt_file: Path) -> Corpus:
    src_lines, tgt_lines = _lines(src_file.read_bytes()), _lines(tgt_file.read_bytes())
    if len(src_lines) != len(tgt_lines):
        raise DataError(
            f"parallel files differ in length: {src_file} has {len(src_lines):,} lines, "
            f"{tgt_file} has {len(tgt_lines):,}"
        )
    corpus = Corpus(pairs=[], origin={"path": str(src_file), "target_path": str(tgt_file)})
    for src, tgt in zip(src_lines, tgt_lines):
        try:
            _add_pair(corpus, src.decode("utf-8"), tgt.decode("utf-8"))
        except UnicodeDecodeError:
            corpus.dropped["invalid UTF-8"] += 1
    if not corpus.pairs:
        raise DataError(f"no usable sentence pairs ({_describe(corpus.dropped)})", src_file)
    corpus.origin.update(sha256=file_digest(src_file), target_sha256=file_digest(tgt_file))
    return corpus


def _lines(data: bytes) -> list[bytes]:
    """Split on ``\\n``, ``\\r\\n`` or a lone ``\\r``; drop a UTF-8 byte-order mark."""
    return data.removeprefix(b"\xef\xbb\xbf").splitlines()


def _add_pair(corpus: Corpus, src: str, tgt: str) -> None:
    src, tgt = clean(src), clean(tgt)
    if src and tgt:
        corpus.pairs.append((src, tgt))
    else:
        corpus.dropped["empty side"] += 1


def _describe(dropped: Counter[str]) -> str:
    if not dropped:
        return "the input is empty"
    return "skipped: " + ", ".join(f"{n:,} {reason}" for reason, n in dropped.most_common())
