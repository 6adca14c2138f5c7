"""The manifest of a ``labels`` output directory, which ``--resume`` trusts.

``OUT/manifest.jsonl`` starts with a header line naming the batch and every option that
shapes a label; each later line records one finished part::

    {"manifest": "provmint-labels/1", "batch_id": "...", "options": {...}}
    {"part": 0, "labels": 65536}

A part's line is written only after every file of the part is durable (each fsynced,
or the file system synced when they are many), then the manifest itself is fsynced: a
part listed is a part complete. A run killed part-way leaves the part it was drawing
unlisted (it is drawn again) and at worst a torn last line, which reading ignores (and
the next entry starts on a line of its own).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from provmint.store.files import load_json

__all__ = [
    "MANIFEST_FORMAT",
    "MANIFEST_NAME",
    "Manifest",
    "ManifestMismatch",
    "make_durable",
    "sync_filesystem",
]

MANIFEST_NAME = "manifest.jsonl"
MANIFEST_FORMAT = "provmint-labels/1"
_MAX_BYTES = 64 << 20  # a 1M-label job lists 16 parts: anything near this is not ours


class ManifestMismatch(ValueError):
    """The directory holds labels of another batch or made with other options."""


@dataclass(slots=True)
class Manifest:
    """An output directory's manifest: which parts are complete."""

    path: Path
    header: dict[str, Any]
    done: dict[int, int] = field(default_factory=dict)  # part -> labels

    @classmethod
    def start(cls, out_dir: Path, header: dict[str, Any], *, resume: bool) -> Manifest:
        """The manifest to continue (``resume``: an existing one, which must have this
        ``header``) or a fresh one (any old manifest replaced). Raises ManifestMismatch."""
        path = out_dir / MANIFEST_NAME
        full = {"manifest": MANIFEST_FORMAT, **header}
        if resume and path.exists():
            found, done = _read(path)
            if found != full:
                raise ManifestMismatch(
                    f"{out_dir} holds labels made for another batch or with other options"
                )
            _end_torn_line(path)
            return cls(path, full, done)
        manifest = cls(path, full)
        _write_new(path, full)
        return manifest

    def complete(self, part: int, labels: int) -> None:
        """Record ``part`` as complete (call once its files are durable)."""
        line = json.dumps({"part": part, "labels": labels}, separators=(",", ":")) + "\n"
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND)
        try:
            os.write(fd, line.encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        self.done[part] = labels


def _write_new(path: Path, header: dict[str, Any]) -> None:
    """Replace ``path`` with a manifest holding only ``header`` (atomically)."""
    temporary = path.with_name(f".{path.name}.tmp")
    with open(temporary, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(header, sort_keys=True, separators=(",", ":")) + "\n")
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(temporary, path)
    fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _end_torn_line(path: Path) -> None:
    """End a line a killed run left unfinished, so the next entry starts a line."""
    with open(path, "rb+") as fh:
        fh.seek(0, os.SEEK_END)
        if fh.tell() == 0:
            return
        fh.seek(-1, os.SEEK_END)
        if fh.read(1) != b"\n":
            fh.write(b"\n")
            fh.flush()
            os.fsync(fh.fileno())


def _read(path: Path) -> tuple[dict[str, Any], dict[int, int]]:
    """The header and the complete parts of a manifest (a torn line is ignored)."""
    if path.stat().st_size > _MAX_BYTES:
        raise ManifestMismatch(f"{path} is not a labels manifest (too large)")
    lines = path.read_bytes().split(b"\n")
    try:
        header = load_json(lines[0])
    except ValueError:
        raise ManifestMismatch(f"{path} is not a labels manifest") from None
    done: dict[int, int] = {}
    for line in lines[1:]:
        try:
            entry = load_json(line)
            part, labels = entry["part"], entry["labels"]
        except (ValueError, KeyError, TypeError):
            continue  # a torn last line, or an empty one
        if type(part) is int and type(labels) is int and part >= 0 and labels >= 0:
            done[part] = labels
    if not isinstance(header, dict):
        raise ManifestMismatch(f"{path} is not a labels manifest")
    return header, done


def make_durable(out_dir: Path, files: list[str]) -> None:
    """Make a part's label ``files`` (relative to ``out_dir``) durable: each fsynced,
    then their directories, when they are few; a ``syncfs`` of the file system when
    they are many (one call per part, where 65,536 fsyncs would take longer than
    drawing the labels)."""
    unique = sorted(set(files))
    if len(unique) > _FSYNC_EACH:
        sync_filesystem(out_dir)
        return
    for name in [*unique, *sorted({str(Path(n).parent) for n in unique})]:
        fd = os.open(out_dir / name, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_FSYNC_EACH = 512
"""Up to this many files a part's files are fsynced one by one."""


def sync_filesystem(directory: Path) -> None:
    """Make every file written under ``directory`` durable: ``syncfs`` on its file
    system (one call per part, where an fsync per file would cost more than drawing
    the labels), or ``sync`` where there is no ``syncfs``."""
    libc_name = ctypes.util.find_library("c")
    syncfs = getattr(ctypes.CDLL(libc_name), "syncfs", None) if libc_name else None
    if syncfs is None:
        os.sync()
        return
    fd = os.open(directory, os.O_RDONLY)
    try:
        if syncfs(fd) != 0:
            os.sync()
    finally:
        os.close(fd)
