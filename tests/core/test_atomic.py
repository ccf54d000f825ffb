"""Atomic writes: the target is replaced only by a complete file or folder."""

from __future__ import annotations

import pytest

from core.atomic import atomic_dir


def test_success_replaces_the_target_and_leaves_no_temporary_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with atomic_dir(target) as tmp:
        (tmp / "new.txt").write_text("new")
        assert not (target / "new.txt").exists()  # nothing visible before the rename
    assert sorted(p.name for p in target.iterdir()) == ["new.txt"]
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_failure_keeps_the_old_target_and_removes_the_temporary_folder(tmp_path):
    target = tmp_path / "out"
    target.mkdir()
    (target / "old.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_dir(target) as tmp:
            (tmp / "half.txt").write_text("half")
            raise KeyboardInterrupt
    assert (target / "old.txt").read_text() == "old" and not (target / "half.txt").exists()
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def test_atomic_write_text_replaces_the_file_whole(tmp_path):
    from core.atomic import atomic_write_text

    target = tmp_path / "deep" / "config.yaml"
    assert atomic_write_text(target, "first\n") == target
    atomic_write_text(target, "second\n")
    assert target.read_text(encoding="utf-8") == "second\n"
    assert [p.name for p in target.parent.iterdir()] == ["config.yaml"]


def test_atomic_file_keeps_the_old_file_when_the_write_fails(tmp_path):
    from core.atomic import atomic_file

    target = tmp_path / "records.jsonl"
    target.write_text("old\n", encoding="utf-8")
    with pytest.raises(RuntimeError):
        with atomic_file(target) as fh:
            fh.write("half")
            raise RuntimeError("disk gone")
    assert target.read_text(encoding="utf-8") == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["records.jsonl"]
