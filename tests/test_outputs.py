"""Output files: written atomically only over regular files, straight through to devices,
FIFOs and standard output, never replacing what is not a regular file; ``-`` is standard
output everywhere; spreadsheet-safe CSVs with ``--raw`` for machines; a full disk is one
line naming the file and the free space.

Special files are real: FIFOs made with mkfifo, character devices made with mknod (as
root; the FIFO cases always run), symlinks to each, /dev/stdout in a real process, a
real tmpfs that fills up (in a private mount namespace, as root) and a real file size
limit (RLIMIT_FSIZE, any user).
"""

from __future__ import annotations

import csv
import io
import json
import os
import random
import resource
import shutil
import signal
import stat
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from conftest import EXAMPLE_CSV, ROOT
from helpers import csv_text, mint_example, one_error
from hypothesis import given, settings
from hypothesis import strategies as st

from provmint import csvsafe
from provmint.batch import REJECTS_HEADER, write_rejects
from provmint.errors import EXIT_ERROR, EXIT_OK, EXIT_REJECTED, EXIT_USAGE, OutputError, Reject
from provmint.keys import init_keyring, load_keyring, rotate_key
from provmint.outfile import TargetKind, open_output, resolve_output, write_output
from provmint.products import LABEL_CSV_COLUMNS

GTIN = "09520123450014"
SERIAL = "546CAWQDCR56"
IS_ROOT = os.geteuid() == 0
DEVNULL_NUMBERS = os.makedev(1, 3)


# --------------------------------------------------------------------------- special files


class FifoReader:
    """Drains a FIFO in a thread. A spare write end is held open until :meth:`finish`, so
    the reader sees end-of-file only after the writer under test is done, and a writer
    never blocks waiting for a reader."""

    def __init__(self, path: Path) -> None:
        self.fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
        self.spare = os.open(path, os.O_WRONLY)
        os.set_blocking(self.fd, True)
        self.chunks: list[bytes] = []
        self.thread = threading.Thread(target=self._drain, daemon=True)
        self.thread.start()

    def _drain(self) -> None:
        while chunk := os.read(self.fd, 1 << 16):
            self.chunks.append(chunk)

    def finish(self) -> bytes:
        os.close(self.spare)
        self.thread.join(30)
        assert not self.thread.is_alive()
        os.close(self.fd)
        return b"".join(self.chunks)


def make_chardev(path: Path) -> None:
    """A character device with /dev/null's numbers (root only)."""
    if not IS_ROOT:
        pytest.skip("making a device node needs root (the FIFO cases cover the rest)")
    os.mknod(path, stat.S_IFCHR | 0o666, DEVNULL_NUMBERS)


def node(path: Path) -> tuple[str, Any]:
    """What is at ``path`` itself: ("link", target), ("fifo", None), ("chr", rdev),
    ("reg", inode), ("other", file type) or ("none", None)."""
    try:
        info = os.lstat(path)
    except FileNotFoundError:
        return ("none", None)
    if stat.S_ISLNK(info.st_mode):
        return ("link", os.readlink(path))
    if stat.S_ISFIFO(info.st_mode):
        return ("fifo", None)
    if stat.S_ISCHR(info.st_mode):
        return ("chr", info.st_rdev)
    if stat.S_ISREG(info.st_mode):
        return ("reg", info.st_ino)
    return ("other", stat.S_IFMT(info.st_mode))


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if p.name.endswith(".tmp"))


@dataclass
class Target:
    """An output path prepared as one kind of file, and how to read back what was
    written to it (None: a device that keeps nothing)."""

    kind: str
    path: Path
    fifo: FifoReader | None = None
    real: Path | None = None  # the regular file a link points to

    def written(self, stdout: bytes) -> bytes | None:
        if self.kind == "-":
            return stdout
        if self.fifo is not None:
            return self.fifo.finish()
        if self.kind in ("chr", "link-chr"):
            return None
        return (self.real or self.path).read_bytes()


KINDS = ["new", "regular", "fifo", "chr", "link-regular", "link-fifo", "link-chr", "-"]


def prepare(kind: str, directory: Path, name: str) -> Target:
    """Make ``directory/name`` a ``kind`` of output (see KINDS)."""
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    if kind == "-":
        return Target(kind, Path("-"))
    if kind == "regular":
        path.write_bytes(b"old contents\n")
        path.chmod(0o640)
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "chr":
        make_chardev(path)
    elif kind.startswith("link-"):
        inner = prepare(kind.removeprefix("link-"), directory / "real", name)
        path.symlink_to(inner.path)
        return Target(kind, path, inner.fifo, inner.path if kind == "link-regular" else None)
    if kind == "fifo":
        return Target(kind, path, FifoReader(path))
    return Target(kind, path)


def unchanged(target: Target, before: tuple[str, Any]) -> None:
    """The node at the path is what it was: a link is still the same link, a FIFO a
    FIFO, a device the same device; a regular file was replaced by a regular file."""
    if target.kind == "-":
        return
    after = node(target.path)
    if target.kind in ("new", "regular"):
        assert after[0] == "reg"
    else:
        assert after == before, (target.kind, before, after)
    if target.kind.startswith("link-") and target.real is None:
        assert node(target.path.parent / "real" / target.path.name)[0] == target.kind[5:]
    assert leftovers(target.path.parent) == []


# --------------------------------------------------------------------------- the library


@pytest.mark.parametrize("kind", [k for k in KINDS if k != "-"])
def test_open_output_writes_each_kind_in_place_or_atomically(kind: str, tmp_path: Path) -> None:
    target = prepare(kind, tmp_path, "out.bin")
    before = node(target.path)
    data = os.urandom(200_000)  # more than a pipe holds
    write_output(target.path, data)
    got = target.written(b"")
    assert got is None or got == data
    unchanged(target, before)
    expected = {
        "new": TargetKind.FILE,
        "regular": TargetKind.FILE,
        "link-regular": TargetKind.FILE,
    }.get(kind, TargetKind.STREAM)
    assert resolve_output(target.path).kind is expected


def test_a_replaced_regular_file_is_a_new_file_with_the_old_mode(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b"old\n")
    path.chmod(0o640)
    inode = path.stat().st_ino
    write_output(path, b"new\n")
    assert path.read_bytes() == b"new\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o640
    assert path.stat().st_ino != inode  # renamed over, not rewritten in place


def test_a_failed_write_leaves_the_old_file(tmp_path: Path) -> None:
    path = tmp_path / "out.csv"
    path.write_bytes(b"old\n")
    with pytest.raises(RuntimeError), open_output(path) as fh:
        fh.write(b"half of the new")
        raise RuntimeError("stopped")
    assert path.read_bytes() == b"old\n" and leftovers(tmp_path) == []


def test_a_dangling_link_gets_its_target_created(tmp_path: Path) -> None:
    link = tmp_path / "out.csv"
    link.symlink_to(tmp_path / "elsewhere" / "real.csv")
    (tmp_path / "elsewhere").mkdir()
    write_output(link, b"data\n")
    assert link.is_symlink() and (tmp_path / "elsewhere" / "real.csv").read_bytes() == b"data\n"


def test_links_through_linked_directories_and_relative_targets(tmp_path: Path) -> None:
    (tmp_path / "a" / "b").mkdir(parents=True)
    (tmp_path / "a" / "b" / "real.csv").write_bytes(b"old\n")
    (tmp_path / "dirlink").symlink_to(tmp_path / "a" / "b")
    (tmp_path / "a" / "rel.csv").symlink_to("b/../b/real.csv")
    (tmp_path / "chain.csv").symlink_to(tmp_path / "a" / "rel.csv")
    write_output(tmp_path / "dirlink" / "real.csv", b"one\n")
    write_output(tmp_path / "chain.csv", b"two\n")
    assert (tmp_path / "a" / "b" / "real.csv").read_bytes() == b"two\n"
    assert (tmp_path / "chain.csv").is_symlink() and (tmp_path / "a" / "rel.csv").is_symlink()
    (tmp_path / "loop").symlink_to(tmp_path / "loop")
    with pytest.raises(OutputError):
        write_output(tmp_path / "loop", b"x")


@pytest.mark.parametrize("kind", ["directory", "socket"])
def test_what_cannot_be_written_is_refused(kind: str, tmp_path: Path) -> None:
    import socket

    path = tmp_path / "out"
    if kind == "directory":
        path.mkdir()
    else:
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(path))
        sock.close()
    with pytest.raises(OutputError, match=f"cannot write {path}"):
        write_output(path, b"x")
    assert node(path)[0] == "other" and leftovers(tmp_path) == []


def test_private_files_are_0600_and_regular(tmp_path: Path) -> None:
    old = os.umask(0)
    try:
        write_output(tmp_path / "secret.json", b"{}", private=True)
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "secret.json").stat().st_mode) == 0o600
    os.mkfifo(tmp_path / "fifo")
    with pytest.raises(OutputError, match="not a regular file"):
        write_output(tmp_path / "fifo", b"{}", private=True)


# --------------------------------------------------------------------------- keys


def test_keys_rotate_through_a_symlink_keeps_the_link(tmp_path: Path) -> None:
    real = tmp_path / "vault" / "keys.json"
    init_keyring(real)
    old = load_keyring(real).active
    link = tmp_path / "config" / "keys.json"
    link.parent.mkdir()
    link.symlink_to(real)
    new, retired = rotate_key(link)
    assert link.is_symlink() and os.readlink(link) == str(real)
    assert retired.id == old.id
    assert load_keyring(real).active.id == new.id  # the target has the new active key
    assert {k.id: k.status for k in load_keyring(link).keys} == {
        old.id: "retired",
        new.id: "active",
    }
    assert stat.S_IMODE(real.stat().st_mode) == 0o600
    assert leftovers(real.parent) == [] and leftovers(link.parent) == []


def test_keys_init_through_a_dangling_link(cli, tmp_path: Path) -> None:
    real = tmp_path / "vault" / "keys.json"
    real.parent.mkdir(mode=0o700)
    link = tmp_path / "keys.json"
    link.symlink_to(real)
    r = cli("keys", "init", "--key-file", link)
    assert r.exit_code == 0, r.output
    r = cli("keys", "rotate", "--key-file", link)
    assert r.exit_code == 0, r.output
    assert link.is_symlink() and len(load_keyring(real).keys) == 2
    assert stat.S_IMODE(real.stat().st_mode) == 0o600


# --------------------------------------------------------------------------- every command


@dataclass(frozen=True)
class Command:
    """A command that writes one output file: its arguments for an output path, the exit
    code it ends with, and where the output lives when given a directory."""

    name: str
    args: Callable[[dict[str, Any], Path], list[object]]
    code: int = EXIT_OK
    filename: str = "out"
    in_directory: bool = False  # labels: OUT/labels.csv


COMMANDS = [
    Command(
        "batch export", lambda m, p: ["batch", "export", m["batch"], "--allow-placeholder", "-o", p]
    ),
    Command(
        "batch export --raw",
        lambda m, p: ["batch", "export", m["batch"], "--raw", "--allow-placeholder", "-o", p],
    ),
    Command(
        "batch export parquet",
        lambda m, p: [
            "batch",
            "export",
            m["batch"],
            "--format",
            "parquet",
            "--allow-placeholder",
            "-o",
            p,
        ],
    ),
    Command(
        "proof export",
        lambda m, p: ["proof", "export", "--gtin", GTIN, "--serial", SERIAL, "-o", p],
    ),
    Command(
        "proof export --all",
        lambda m, p: ["proof", "export", "--batch", m["batch"], "--all", "-o", p],
    ),
    Command(
        "proof export --all parquet",
        lambda m, p: [
            "proof",
            "export",
            "--batch",
            m["batch"],
            "--all",
            "--format",
            "parquet",
            "-o",
            p,
        ],
    ),
    Command(
        "batch create --rejects",
        lambda m, p: ["batch", "create", m["bad"], "--rejects", p],
        code=EXIT_REJECTED,
    ),
    Command(
        "labels.csv",
        lambda m, p: ["labels", m["batch"], "--out", p, "--format", "none", "--allow-placeholder"],
        filename="labels.csv",
        in_directory=True,
    ),
]


@pytest.fixture
def minted(cli, keyed, write_csv) -> dict[str, Any]:
    bad = write_csv(
        "bad.csv",
        csv_text(["gtin", "serial", "lot"], [[GTIN, "=1+2", "-1"], [GTIN, "B A D", "@x"]]),
    )
    return {"batch": mint_example(cli), "bad": bad}


def _run(cli, command: Command, minted: dict[str, Any], target: Target) -> bytes | None:
    out = target.path.parent if command.in_directory else target.path
    r = cli(*command.args(minted, out))
    assert "Traceback" not in r.output
    assert r.exit_code == command.code, (r.exit_code, r.output)
    return target.written(r.stdout_bytes)


@pytest.mark.parametrize(
    ("command", "kind"),
    [
        pytest.param(command, kind, id=f"{command.name}-{kind}")
        for command in COMMANDS
        for kind in KINDS
        if not (command.in_directory and kind == "-")  # see test_labels_refuses_standard_output
    ],
)
def test_every_command_writes_every_kind_of_output(
    cli, minted, tmp_path: Path, command: Command, kind: str
) -> None:
    reference = tmp_path / "reference"
    expected = _run(cli, command, minted, prepare("new", reference, command.filename))
    target = prepare(kind, tmp_path / "target", command.filename)
    before = node(target.path)
    got = _run(cli, command, minted, target)
    assert got is None or got == expected, command.name
    unchanged(target, before)


def test_labels_refuses_standard_output(cli, minted) -> None:
    one_error(
        cli("labels", minted["batch"], "--out", "-", "--allow-placeholder"),
        EXIT_USAGE,
        "standard output",
    )


def test_rejects_on_standard_output_are_not_mixed_with_json(cli, minted) -> None:
    r = cli("batch", "create", minted["bad"], "--rejects", "-")
    assert r.exit_code == EXIT_REJECTED
    assert next(csv.reader(io.StringIO(r.stdout))) == list(REJECTS_HEADER)
    assert "listed on standard output" in r.stderr
    one_error(
        cli("batch", "create", minted["bad"], "--rejects", "-", "--json"),
        EXIT_USAGE,
        "--json and --rejects -",
    )


def test_a_stale_rejects_report_is_removed_but_never_a_special_file(
    cli, minted, tmp_path: Path
) -> None:
    good = tmp_path / "good.csv"
    good.write_text(csv_text(["gtin", "serial"], [[GTIN, "NEW1"]]))
    stale = tmp_path / "stale.csv"
    write_rejects(stale, [])
    assert cli("batch", "create", good, "--rejects", stale).exit_code == 0
    assert not stale.exists()
    os.mkfifo(tmp_path / "fifo")  # never opened (it would block), never removed
    good.write_text(csv_text(["gtin", "serial"], [[GTIN, "NEW2"]]))
    assert cli("batch", "create", good, "--rejects", tmp_path / "fifo").exit_code == 0
    assert node(tmp_path / "fifo")[0] == "fifo"


@pytest.mark.parametrize("name", ["/dev/stdout", "/dev/fd/1", "-"])
def test_standard_output_by_name_in_a_real_process(cli, minted, tmp_path: Path, name: str) -> None:
    """Redirected to a file (``>`` then ``>>``) and to a pipe; /dev/stdout stays a link."""
    expected = _run(cli, COMMANDS[0], minted, prepare("new", tmp_path / "ref", "out"))
    args = [
        sys.executable,
        "-m",
        "provmint",
        "batch",
        "export",
        minted["batch"],
        "--allow-placeholder",
        "-o",
        name,
    ]
    out = tmp_path / "redirected.csv"
    for mode, start in (("wb", b""), ("ab", b"kept\n")):
        out.write_bytes(start)
        with open(out, mode) as fh:
            p = subprocess.run(args, stdout=fh, stderr=subprocess.PIPE, timeout=120, check=False)
        assert p.returncode == 0, p.stderr
        assert out.read_bytes() == start + expected
    p = subprocess.run(args, capture_output=True, timeout=120, check=False)
    assert p.returncode == 0 and p.stdout == expected, p.stderr
    assert os.path.islink("/dev/stdout") and stat.S_ISCHR(os.stat("/dev/null").st_mode)


# --------------------------------------------------------------------------- spreadsheets

DANGEROUS = csvsafe.FORMULA_PREFIXES


@given(st.text())
def test_neutralise_prefixes_exactly_the_dangerous_values(value: str) -> None:
    out = csvsafe.neutralise(value)
    if value.startswith(DANGEROUS):
        assert out == "'" + value
    else:
        assert out == value


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["", *DANGEROUS]), st.text(), st.text()), max_size=8))
def test_rejects_reports_neutralised_and_raw(parts: list[tuple[str, str, str]]) -> None:
    """Generated values with dangerous prefixes: neutralised in the default report, and
    byte-exact through Python's csv module with ``raw``."""
    import tempfile

    rejects = [
        Reject(i + 1, i + 2, column + "c", prefix + value, "code", "reason " + value)
        for i, (prefix, value, column) in enumerate(parts)
    ]
    with tempfile.TemporaryDirectory() as directory:
        for raw in (False, True):
            path = Path(directory) / f"rejects-{raw}.csv"
            write_rejects(path, rejects, raw=raw)
            with open(path, newline="", encoding="utf-8") as fh:
                rows = list(csv.reader(fh))
            assert rows[0] == list(REJECTS_HEADER)
            for reject, row in zip(rejects, rows[1:], strict=True):
                fields = [reject.column, reject.value, reject.code, reject.reason]
                shown = fields if raw else [csvsafe.neutralise(f) for f in fields]
                assert row == [str(reject.row), str(reject.line), *shown]
                if not raw:
                    assert not any(cell.startswith(DANGEROUS) for cell in row)


def _cset82(rng: random.Random, size: int) -> str:
    alphabet = "!\"%&'()*+,-./0123456789:;<=>?ABCDEFGHIJKLMNOPQRSTUVWXYZ_abcdefghijklmnopqrstuvwxyz"
    return "".join(rng.choice(alphabet) for _ in range(size))


def test_label_csvs_neutralise_by_default_and_round_trip_raw(cli, keyed, tmp_path: Path) -> None:
    """Generated serials and lots starting with = + - (valid GS1 values), with tokens
    (one in 64 starts with -): batch export and labels.csv neutralise them the same way,
    quote every field the same way, and --raw gives back exactly what is stored."""
    seed = random.randrange(1 << 32)
    rng = random.Random(seed)
    rows, seen = [], set()
    while len(rows) < 300:
        serial = rng.choice("=+-") + _cset82(rng, rng.randint(0, 19))
        lot = rng.choice(["", rng.choice("=+-") + _cset82(rng, rng.randint(0, 19))])
        if serial not in seen:
            seen.add(serial)
            rows.append([GTIN, serial, lot])
    source = tmp_path / "risky.csv"
    source.write_text(csv_text(["gtin", "serial", "lot"], rows), encoding="utf-8")
    r = cli("batch", "create", source, "--json")
    assert r.exit_code == 0, (seed, r.output)
    batch = json.loads(r.stdout)["batch_id"]
    base = ["--url-base", "https://id.brand.test"]
    r = cli("batch", "export", batch, *base, "--format", "parquet", "-o", tmp_path / "t.pq")
    assert r.exit_code == 0, r.output
    stored = [[*row.values(), ""] for row in pq.read_table(tmp_path / "t.pq").to_pylist()]

    def read(path: Path) -> tuple[str, list[list[str]]]:
        text = path.read_text(encoding="utf-8")
        return text, list(csv.reader(io.StringIO(text, newline="")))

    for raw in (False, True):
        flag = ["--raw"] if raw else []
        r = cli("batch", "export", batch, *base, "-o", tmp_path / "e.csv", *flag)
        assert r.exit_code == 0, r.output
        labels = tmp_path / f"labels-{raw}"
        r = cli("labels", batch, *base, "--out", labels, "--format", "none", *flag)
        assert r.exit_code == 0, r.output
        export_text, export_rows = read(tmp_path / "e.csv")
        labels_text = (labels / "labels.csv").read_text(encoding="utf-8")
        assert labels_text == export_text  # one CSV: the same header, values and quoting
        assert export_rows[0] == list(LABEL_CSV_COLUMNS)
        expected = stored if raw else [[csvsafe.neutralise(v) for v in row] for row in stored]
        assert export_rows[1:] == expected, seed
        for line in export_text.rstrip("\n").split("\n"):  # U+001D is no line end here
            assert line.startswith('"') and line.endswith('"')  # every field quoted
        if not raw:
            assert not any(cell.startswith(DANGEROUS) for row in export_rows for cell in row)
            assert any(row[1].startswith("'") for row in export_rows[1:])


# --------------------------------------------------------------------------- full disks


def _limited(limit: int) -> Callable[[], None]:
    """For a child process: files may not grow beyond ``limit`` bytes, and exceeding it
    fails the write with EFBIG instead of killing the process (SIGXFSZ ignored)."""

    def apply() -> None:
        signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    return apply


def _provmint(
    *args: object, preexec: Callable[[], None] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "provmint", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        preexec_fn=preexec,
        cwd=cwd,
        env=dict(os.environ),
    )


def _one_line(p: subprocess.CompletedProcess[str], needle: str) -> str:
    assert p.returncode == EXIT_ERROR, (p.returncode, p.stderr)
    assert "Traceback" not in p.stderr
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("hint: "), p.stderr
    assert lines[0].startswith("error: ") and needle in lines[0], lines[0]
    return lines[0]


def test_a_file_size_limit_on_batch_export_and_the_rejects_file(
    cli, minted, tmp_path: Path
) -> None:
    out = tmp_path / "labels.csv"
    out.write_bytes(b"old\n")
    p = _provmint(
        "batch", "export", minted["batch"], "--allow-placeholder", "-o", out, preexec=_limited(1000)
    )
    _one_line(p, f"file too large writing {out} (")
    assert out.read_bytes() == b"old\n" and leftovers(tmp_path) == []

    # Four problems a row: the report (~4.7 MB) outgrows the limit; the store's own files
    # (a 2 MB catalog, a 0.6 MB tree file) do not.
    bad = tmp_path / "bad.csv"
    wrong_gtin = GTIN[:-1] + "5"
    bad.write_text(
        csv_text(
            ["gtin", "serial", "lot", "expiry"],
            [
                [wrong_gtin, f"B A D {i} " + "x" * 70, "L~" + "y" * 70, "2024-13-45"]
                for i in range(10_000)
            ],
        )
    )
    rejects = tmp_path / "bad.rejects.csv"
    p = _provmint("batch", "create", bad, "--rejects", rejects, preexec=_limited(3_000_000))
    _one_line(p, f"file too large writing {rejects} (")
    assert not rejects.exists() and leftovers(tmp_path) == []


def _tmpfs_available() -> bool:
    if not IS_ROOT or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt"],
        capture_output=True,
        timeout=30,
        check=False,
    )
    return probe.returncode == 0


TMPFS = pytest.mark.skipif(
    not _tmpfs_available(), reason="needs root and mount namespaces (unshare -m) for a tmpfs"
)


def _on_full_tmpfs(disk: Path, *args: object) -> tuple[subprocess.CompletedProcess[str], str]:
    """Run provmint with ``disk`` a fresh 16 KiB tmpfs (in a private mount namespace)
    holding an old ``disk/out.csv`` and filled up; then list what is on it."""
    script = (
        'mount -t tmpfs -o size=16k tmpfs "$DISK" && echo old > "$DISK/out.csv" && '
        '(dd if=/dev/zero of="$DISK/fill" bs=1k count=64 2>/dev/null; true) && '
        '"$@"; rc=$?; echo "--- $(ls -A "$DISK" | tr "\\n" " ")$(cat "$DISK/out.csv")" >&2; '
        "exit $rc"
    )
    disk.mkdir(exist_ok=True)
    p = subprocess.run(
        [
            "unshare",
            "-m",
            "sh",
            "-c",
            script,
            "sh",
            sys.executable,
            "-m",
            "provmint",
            *map(str, args),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
        env={**os.environ, "DISK": str(disk)},
    )
    stderr, _, listing = p.stderr.rpartition("--- ")
    return subprocess.CompletedProcess(p.args, p.returncode, p.stdout, stderr), listing.strip()


@TMPFS
@pytest.mark.parametrize("what", ["batch export", "proof export --all", "rejects", "labels"])
def test_a_full_disk_names_the_file_and_the_free_space(
    cli, minted, tmp_path: Path, what: str
) -> None:
    disk = tmp_path / "disk"
    out = disk / "out.csv"
    args: list[object] = {
        "batch export": ["batch", "export", minted["batch"], "--allow-placeholder", "-o", out],
        "proof export --all": ["proof", "export", "--batch", minted["batch"], "--all", "-o", out],
        "rejects": ["batch", "create", minted["bad"], "--rejects", out],
        "labels": [
            "labels",
            minted["batch"],
            "--out",
            disk / "labels",
            "--format",
            "none",
            "--allow-placeholder",
        ],
    }[what]
    p, listing = _on_full_tmpfs(disk, *args)
    written = disk / "labels" if what == "labels" else out
    line = _one_line(p, "no space left on device ")
    assert str(written) in line and line.endswith(" B free)"), line
    # The old file is intact and nothing half-written is left on the disk.
    assert listing == ("fill labels out.csv old" if what == "labels" else "fill out.csv old")
    batches = json.loads(cli("batch", "list", "--json").stdout)["batches"]
    assert len(batches) == 1  # the refused batch was not minted


def test_the_readme_documents_outputs() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for needle in (
        "### Output files",
        "OWASP",
        "--raw",
        "`-o -`",
        "atomically",
        "FIFO",
        "symlink",
        "(12 KiB free)",
    ):
        assert needle in readme, needle
    assert "labels.csv" in readme and EXAMPLE_CSV.name in readme
