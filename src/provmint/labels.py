"""``provmint labels``: a QR code per product of a batch, and the label-printer CSV.

Each product's verification URL is rendered with segno (SVG by default, PNG on request;
error correction level configurable, the 4-module quiet zone kept) into
``OUT/part-NNNNN/{leaf:07d}-{gtin14}-{serial}.{svg|png}`` (the serial percent-encoded
for the file system), one directory per 65,536 products. ``OUT/labels.csv`` lists every
product with its code file, so a printer job can match them. Large batches stream part
by part through a process pool; ``--format none`` writes only the CSV (label software
often draws the code itself).
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from provmint import csvsafe
from provmint.config import Settings
from provmint.errors import ConfigError, os_error
from provmint.outfile import is_stdout, open_output
from provmint.pool import start_pool
from provmint.products import LABEL_COLUMNS, catalog_view, label_table
from provmint.store import BatchInfo, Store, find_batch

if TYPE_CHECKING:
    from concurrent.futures import ProcessPoolExecutor

    import pyarrow as pa

__all__ = ["FORMATS", "LEVELS", "LabelSummary", "render_labels"]

FORMATS = ("svg", "png", "none")
LEVELS = ("l", "m", "q", "h")
_CHUNK = 4096


@dataclass(frozen=True, slots=True)
class LabelSummary:
    """What ``render_labels`` wrote."""

    batch_id: str
    labels: int
    images: int
    csv_path: str
    out_dir: str
    elapsed: float

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "batch_id": self.batch_id,
            "labels": self.labels,
            "images": self.images,
            "csv": self.csv_path,
            "out_dir": self.out_dir,
            "elapsed_s": round(self.elapsed, 3),
            "labels_per_s": round(self.labels / self.elapsed, 1) if self.elapsed else None,
        }


def image_name(leaf: int, gtin14: str, serial: str, fmt: str) -> str:
    """File name of a product's code image (stable, unique, file-system safe)."""
    return f"{leaf:07d}-{gtin14}-{quote(serial, safe='')}.{fmt}"


@dataclass(frozen=True, slots=True)
class _RenderJob:
    """Codes for a worker to draw into one directory: ``urls[i]`` into file ``names[i]``."""

    directory: str
    urls: list[str]
    names: list[str]
    fmt: str
    level: str
    scale: int


def _render(job: _RenderJob) -> int:
    """Worker: render a job's codes. Top-level so a process pool can run it."""
    import segno

    from provmint.qrmask import installed

    os.makedirs(job.directory, exist_ok=True)
    with installed():  # segno's mask choice, computed with numpy (identical symbols)
        for url, name in zip(job.urls, job.names, strict=True):
            code = segno.make(url, error=job.level, micro=False, boost_error=False)
            code.save(os.path.join(job.directory, name), kind=job.fmt, scale=job.scale, border=4)
    return len(job.names)


def render_labels(
    settings: Settings,
    ref: str,
    out_dir: Path,
    *,
    fmt: str = "svg",
    level: str = "m",
    scale: int = 4,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    raw: bool = False,
) -> LabelSummary:
    """Render the batch's codes and write ``labels.csv`` into ``out_dir``.

    ``labels.csv`` is safe to open in a spreadsheet (formula-like values get a leading
    ``'``, see :mod:`provmint.csvsafe`) unless ``raw``; it is written like every output
    (:func:`provmint.outfile.open_output`: atomically, or through a symlink, device or
    FIFO already at that path)."""
    import time

    _check_options(fmt, level, scale)
    started = time.perf_counter()
    _refuse_stdout(out_dir)
    with catalog_view(settings) as (store, view):
        batch = find_batch(view.batches, ref, store.root)
    _make_out_dir(out_dir)
    run = _LabelRun(store, batch, out_dir, fmt, level.lower(), scale, raw, progress)
    csv_path = out_dir / "labels.csv"
    run.pool = _label_pool(fmt, workers or settings.workers, batch.products)
    try:
        run.write(csv_path)
    except OSError as exc:  # writing a code image (the CSV's own errors are mapped already)
        raise os_error(exc, out_dir) from exc
    finally:
        if run.pool is not None:
            run.pool.shutdown(cancel_futures=True)
    return LabelSummary(
        batch.batch_id,
        run.labels,
        run.images,
        str(csv_path),
        str(out_dir),
        time.perf_counter() - started,
    )


def _check_options(fmt: str, level: str, scale: int) -> None:
    """Refuse a bad option before the store is opened or anything is written."""
    if fmt not in FORMATS:
        raise ConfigError(f"unknown label format {fmt!r}; use {', '.join(FORMATS)}")
    if level.lower() not in LEVELS:
        raise ConfigError(f"unknown error correction level {level!r}; use L, M, Q or H")
    if not 1 <= scale <= 100:
        raise ConfigError("scale must be between 1 and 100")


def _refuse_stdout(out_dir: Path) -> None:
    """``-`` cannot take a directory of files: point at the command that writes the CSV."""
    if is_stdout(out_dir):
        raise ConfigError(
            "labels writes a directory (codes and labels.csv), not standard output",
            hint="for the label CSV on standard output use: provmint batch export ID -o -",
        )


def _make_out_dir(out_dir: Path) -> None:
    """Create ``out_dir`` (an OSError becomes the usual error naming the path)."""
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, out_dir, action="creating") from exc


def _label_pool(fmt: str, workers: int, products: int) -> ProcessPoolExecutor | None:
    """A process pool when there are codes to draw and enough of them to pay for one
    (up to one job's worth is drawn here: starting the workers would take longer)."""
    if fmt != "none" and workers > 1 and products > _CHUNK:
        return start_pool(workers, preload=["segno"])
    return None


@dataclass(slots=True)
class _LabelRun:
    """One ``render_labels`` run: what it draws and where, and how far it has got.

    The counters live here because progress is reported across parts: while a part's
    codes are drawn, the count shown is the earlier parts' labels plus this part's
    codes drawn so far.
    """

    store: Store
    batch: BatchInfo
    out_dir: Path
    fmt: str
    level: str  # lower case, as segno takes it
    scale: int
    raw: bool
    progress: Callable[[int, int], None] | None
    pool: ProcessPoolExecutor | None = None
    labels: int = 0
    images: int = 0

    def write(self, csv_path: Path) -> None:
        """Write ``labels.csv`` part by part, drawing each part's codes after its rows."""
        with open_output(csv_path) as sink:
            text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
            out = csvsafe.csv_writer(text)
            out.writerow([*LABEL_COLUMNS, "qr_file"])
            for part_index in range(self.batch.parts):
                self._write_part(part_index, out)
            text.flush()
            text.detach()  # the sink is open_output's to finish

    def _write_part(self, part_index: int, out: Any) -> None:
        """One stored part: its CSV rows (each naming its code file), then its codes."""
        table = self.store.read_part(self.batch, part_index)
        labels = label_table(table)
        leaves = table.column("leaf_index").to_pylist()
        directory = f"part-{part_index:05d}"
        names = self._image_names(leaves, labels)
        shown = labels if self.raw else csvsafe.neutralise_table(labels)
        out.writerows(
            zip(
                *(shown.column(c).to_pylist() for c in LABEL_COLUMNS),
                (f"{directory}/{name}" if name else "" for name in names),
                strict=True,
            )
        )
        if self.fmt != "none":
            self._draw(directory, labels.column("url").to_pylist(), names)
        self.labels += len(leaves)
        self._report(self.labels)

    def _image_names(self, leaves: list[int], labels: pa.Table) -> list[str]:
        """Each product's code file name (from the raw values: the file names must match
        the codes' contents, not the spreadsheet-safe CSV), or "" with no codes drawn."""
        if self.fmt == "none":
            return [""] * len(leaves)
        gtins = labels.column("gtin").to_pylist()
        serials = labels.column("serial").to_pylist()
        return [
            image_name(leaf, gtin, serial, self.fmt)
            for leaf, gtin, serial in zip(leaves, gtins, serials, strict=True)
        ]

    def _draw(self, directory: str, urls: list[str], names: list[str]) -> None:
        """Draw one part's codes in jobs of ``_CHUNK`` (on the pool, if any), in order."""
        jobs = [
            _RenderJob(
                directory=str(self.out_dir / directory),
                urls=urls[i : i + _CHUNK],
                names=names[i : i + _CHUNK],
                fmt=self.fmt,
                level=self.level,
                scale=self.scale,
            )
            for i in range(0, len(names), _CHUNK)
        ]
        before = self.labels  # the earlier parts' labels
        for done in self.pool.map(_render, jobs) if self.pool else map(_render, jobs):
            self.images += done
            self._report(before + min(self.images - before, len(names)))

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, self.batch.products)
