"""The one temporary-file life cycle (``provmint.pendingfile``): a new version of a file
appears whole or not at all, with its mode exactly, and leaves no temporary file behind.

Faults are real where a real file system can produce them (a rename over a non-empty
directory fails); only fsync failures (EIO, EINVAL from a file system that cannot fsync
directories) are faked, since a test cannot make a local disk produce them.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from provmint.pendingfile import PendingFile, fsync_dir


@pytest.fixture
def umask() -> Iterator[None]:
    """Restore the process's umask after a test that sets it."""
    old = os.umask(0o022)
    os.umask(old)
    try:
        yield
    finally:
        os.umask(old)


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    """An empty directory of the test's own (conftest puts files in ``tmp_path``)."""
    path = tmp_path / "work"
    path.mkdir()
    return path


def entries(directory: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in directory.iterdir() if p.is_file()}


def count_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Every fsync from now on, by descriptor (they still happen)."""
    calls: list[int] = []
    real = os.fsync

    def counted(fd: int) -> None:
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fsync", counted)
    return calls


def test_commit_replaces_the_file_whole(workdir: Path) -> None:
    target = workdir / "data.bin"
    target.write_bytes(b"old")
    with PendingFile(target) as pending:
        os.write(pending.fd, b"new ")
        assert target.read_bytes() == b"old"  # nothing shows before the commit
        assert pending.tmp.parent == workdir
        assert pending.tmp.name.startswith(".data.bin.") and pending.tmp.name.endswith(".tmp")
        os.write(pending.fd, b"contents")
    assert entries(workdir) == {"data.bin": b"new contents"}


@pytest.mark.parametrize("failure", [RuntimeError, KeyboardInterrupt])
def test_a_block_that_raises_leaves_the_target_and_no_temporary(
    workdir: Path, failure: type[BaseException]
) -> None:
    (workdir / "data.bin").write_bytes(b"old")
    with pytest.raises(failure), PendingFile(workdir / "data.bin") as pending:
        os.write(pending.fd, b"half")
        raise failure
    assert entries(workdir) == {"data.bin": b"old"}
    with pytest.raises(RuntimeError), PendingFile(workdir / "new.bin"):
        raise RuntimeError
    assert entries(workdir) == {"data.bin": b"old"}


def test_a_failed_rename_leaves_the_target_and_no_temporary(workdir: Path) -> None:
    # A real fault: nothing renames a file over a directory that holds something.
    target = workdir / "taken"
    target.mkdir()
    (target / "inside").write_bytes(b"kept")
    with pytest.raises(OSError) as info, PendingFile(target) as pending:
        os.write(pending.fd, b"never shown")
    assert info.value.errno in (errno.EISDIR, errno.ENOTEMPTY, errno.EEXIST)
    assert sorted(p.name for p in workdir.iterdir()) == ["taken"]
    assert entries(target) == {"inside": b"kept"}
    with pytest.raises(ValueError, match="already committed or discarded"):
        pending.fd  # noqa: B018 -- the property is what is tested


@pytest.mark.parametrize("mode", [0o644, 0o600, 0o640, 0o444, 0o755])
def test_the_mode_is_exact_whatever_the_umask(workdir: Path, umask: None, mode: int) -> None:
    os.umask(0o777)  # as restrictive as it gets: open() alone would give mode 0
    with PendingFile(workdir / "f", mode=mode) as pending:
        assert stat.S_IMODE(os.fstat(pending.fd).st_mode) == mode
        os.write(pending.fd, b"x")
    assert stat.S_IMODE((workdir / "f").stat().st_mode) == mode


def test_with_umask_the_umask_applies_as_for_any_new_file(workdir: Path, umask: None) -> None:
    os.umask(0o027)
    with PendingFile(workdir / "f", mode=0o666, umask=True):
        pass
    assert stat.S_IMODE((workdir / "f").stat().st_mode) == 0o640


@pytest.mark.parametrize(("durable", "expected"), [(True, 2), (False, 0)])
def test_durable_false_makes_no_fsync(
    workdir: Path, monkeypatch: pytest.MonkeyPatch, durable: bool, expected: int
) -> None:
    calls = count_fsyncs(monkeypatch)
    with PendingFile(workdir / "f", durable=durable) as pending:
        os.write(pending.fd, b"x")
    assert len(calls) == expected  # the file, then its directory
    assert (workdir / "f").read_bytes() == b"x"


def test_discard_and_commit_are_final(workdir: Path) -> None:
    pending = PendingFile(workdir / "f")
    pending.discard()
    pending.discard()  # again: nothing to do
    with pytest.raises(ValueError):
        pending.commit()
    assert list(workdir.iterdir()) == []
    with PendingFile(workdir / "g") as pending:
        pending.commit()  # inside the block: the end of the block adds nothing
        pending.discard()  # nor does a discard of what is in place
    assert [p.name for p in workdir.iterdir()] == ["g"]


def test_scratch_that_is_never_committed_leaves_nothing(workdir: Path) -> None:
    scratch = PendingFile(workdir / "rows", mode=0o600, durable=False)
    os.pwrite(scratch.fd, b"abc", 0)
    assert os.pread(scratch.fd, 3, 0) == b"abc"  # readable as well as writable
    scratch.discard()
    assert list(workdir.iterdir()) == []


def test_a_temporary_name_fits_whatever_the_target_name(workdir: Path) -> None:
    target = workdir / ("n" * 255)  # the longest name a file system allows
    with PendingFile(target) as pending:
        assert len(pending.tmp.name) <= 255
    assert target.exists()


def fail_fsync_of_directories(monkeypatch: pytest.MonkeyPatch, code: int) -> None:
    """A file system whose directories cannot be fsynced (``code``): files still can."""
    real = os.fsync

    def fsync(fd: int) -> None:
        if stat.S_ISDIR(os.fstat(fd).st_mode):
            raise OSError(code, os.strerror(code))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)


def test_a_directory_that_cannot_be_fsynced(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # EINVAL: this file system does not fsync directories; nothing to wait for.
    fail_fsync_of_directories(monkeypatch, errno.EINVAL)
    with PendingFile(workdir / "a") as pending:
        os.write(pending.fd, b"a")
    fsync_dir(workdir)
    # EIO: the rename may not survive a crash. The file is in place, but the store must
    # hear of it; a user's output (best effort) is complete as it is.
    fail_fsync_of_directories(monkeypatch, errno.EIO)
    with pytest.raises(OSError) as info, PendingFile(workdir / "b") as pending:
        os.write(pending.fd, b"b")
    assert info.value.errno == errno.EIO
    with PendingFile(workdir / "c", best_effort_dir_sync=True) as pending:
        os.write(pending.fd, b"c")
    fsync_dir(workdir, best_effort=True)
    assert entries(workdir) == {"a": b"a", "b": b"b", "c": b"c"}


def test_best_effort_tolerates_a_directory_that_cannot_be_opened(workdir: Path) -> None:
    with pytest.raises(OSError):
        fsync_dir(workdir / "gone")
    fsync_dir(workdir / "gone", best_effort=True)
