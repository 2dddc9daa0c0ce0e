"""Atomic directory replacement: a failed rebuild leaves the old directory as it was."""

import pytest

from mtkit.errors import MtkitError
from mtkit.fileio import staged_dir


def test_staged_dir_swaps_only_on_success(tmp_path):
    d = tmp_path / "out"; d.mkdir(); (d / "a").write_text("old")
    with pytest.raises(MtkitError):
        with staged_dir(d, False, "x"): pass
    with pytest.raises(RuntimeError):
        with staged_dir(d, True, "x") as s:
            (s / "b").write_text("new"); raise RuntimeError
    assert (d / "a").read_text() == "old" and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with staged_dir(d, True, "x") as s:
        (s / "b").write_text("new")
    assert [p.name for p in d.iterdir()] == ["b"] and sorted(p.name for p in tmp_path.iterdir()) == ["out"]
    with staged_dir(tmp_path / "fresh" / "deep", False, "x") as s:
        (s / "c").write_text("1")
    assert (tmp_path / "fresh" / "deep" / "c").exists()
