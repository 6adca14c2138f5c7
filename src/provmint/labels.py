"""``provmint labels``: a label per product of a batch, and the label-printer CSV.

Each label holds a symbol (:class:`~provmint.labelformats.Symbol`: QR or DataMatrix)
carrying the product's verification URL or its GS1 element string (GS1 DataMatrix, GS1
QR), and the human-readable GS1 text beside it. Formats:

- ``svg``, ``png``: a file per label,
  ``OUT/part-NNNNN/{leaf:07d}-{gtin14}-{serial}.{svg|png}`` (the serial percent-encoded
  for the file system), one directory per stored part (65,536 products);
- ``zpl``: one ZPL stream per part, ``OUT/part-NNNNN.zpl``, for thermal printers that
  draw the symbol themselves;
- ``pdf``: label sheets (A4 or Letter, a grid of labels), ``OUT/part-NNNNN/sheets-
  {first leaf}.pdf``, a file per few dozen sheets;
- ``none``: only the CSV (label software often draws the code itself).

``OUT/labels.csv`` lists every product with the file its label is in. Parts are drawn
one after another (memory stays bounded whatever the batch's size), each through a
process pool; ``OUT/manifest.jsonl`` records each part once its files are durable, so
``resume`` draws only the parts not yet complete.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from provmint.config import Settings, is_placeholder
from provmint.errors import ConfigError, os_error
from provmint.labelformats.options import (
    CONTENTS,
    FORMATS,
    LEVELS,
    SYMBOLS,
    LabelFormat,
    LabelOptions,
)
from provmint.outfile import is_stdout, open_output
from provmint.pool import start_pool
from provmint.products import LabelCsv, catalog_view, label_table
from provmint.store import BatchInfo, Store, find_batch
from provmint.store.prints import PrintRecord, print_log

if TYPE_CHECKING:
    from concurrent.futures import Future, ProcessPoolExecutor

    from provmint.labelformats.jobs import PartLabels
    from provmint.labelformats.manifest import Manifest

__all__ = [
    "CONTENTS",
    "FORMATS",
    "LEVELS",
    "SYMBOLS",
    "LabelFormat",
    "LabelOptions",
    "LabelSummary",
    "render_labels",
]


_CHUNK = 4096
"""Labels per job of a worker (SVG, PNG)."""
_SHEETS_PER_FILE = 50
"""Sheets per PDF file: the PDF is built in memory, so this bounds what a worker holds."""


@dataclass(frozen=True, slots=True)
class LabelSummary:
    """What ``render_labels`` wrote."""

    batch_id: str
    labels: int
    images: int
    csv_path: str
    out_dir: str
    elapsed: float
    skipped: int = 0
    """Labels of parts already complete (``resume``), not drawn again."""
    options: LabelOptions = field(default_factory=LabelOptions)

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form."""
        drawn = self.labels - self.skipped
        return {
            "batch_id": self.batch_id,
            "labels": self.labels,
            "images": self.images,
            "skipped": self.skipped,
            "csv": self.csv_path,
            "out_dir": self.out_dir,
            **{k: v for k, v in self.options.to_json().items() if k in _SUMMARY_OPTIONS},
            "elapsed_s": round(self.elapsed, 3),
            "labels_per_s": round(drawn / self.elapsed, 1) if self.elapsed else None,
        }


_SUMMARY_OPTIONS = ("format", "symbol", "content")


def render_labels(
    settings: Settings,
    ref: str,
    out_dir: Path,
    *,
    url_base: str,
    fmt: str = "svg",
    level: str = "m",
    scale: int = 4,
    options: LabelOptions | None = None,
    resume: bool = False,
    workers: int | None = None,
    progress: Callable[[int, int], None] | None = None,
    raw: bool = False,
) -> LabelSummary:
    """Draw the batch's labels and write ``labels.csv`` into ``out_dir``, with every
    URL on ``url_base`` (see :func:`provmint.config.output_url_base`); the base is
    recorded with the batch (:mod:`provmint.store.prints`).

    ``options`` (else ``fmt``, ``level`` and ``scale`` with the other defaults) say
    what is drawn. With ``resume``, parts the output directory's manifest lists as
    complete are not drawn again (the manifest must be of this batch and options).

    ``labels.csv`` (:class:`provmint.products.LabelCsv`, the ``batch export`` format)
    is safe to open in a spreadsheet (formula-like values get a leading ``'``, see
    :mod:`provmint.csvsafe`) unless ``raw``; it is written like every output
    (:func:`provmint.outfile.open_output`: atomically, or through a symlink, device or
    FIFO already at that path)."""
    import time

    if options is None:
        options = LabelOptions.parse(fmt=fmt, level=level, scale=scale)
    started = time.perf_counter()
    _refuse_stdout(out_dir)
    with catalog_view(settings) as (store, view):
        batch = find_batch(view.batches, ref, store.root)
    # The print record is opened first: a store it cannot be written in refuses the run
    # before a label is drawn.
    with print_log(store, batch.batch_id) as log:
        _make_out_dir(out_dir)
        run = _LabelRun(store, batch, out_dir, url_base, options, raw, progress)
        run.manifest = _start_manifest(out_dir, batch, url_base, options, resume)
        csv_path = out_dir / "labels.csv"
        run.pool = _label_pool(options.fmt, workers or settings.workers, batch.products)
        try:
            run.write(csv_path)
        except OSError as exc:  # writing a label file (the CSV's own errors are mapped already)
            raise os_error(exc, out_dir) from exc
        finally:
            if run.pool is not None:
                run.pool.shutdown(cancel_futures=True)
        fmt_name = options.fmt.value
        log.append(
            PrintRecord.now(
                url_base, "labels", fmt_name, run.labels, placeholder=is_placeholder(url_base)
            )
        )
    return LabelSummary(
        batch.batch_id,
        run.labels,
        run.images,
        str(csv_path),
        str(out_dir),
        time.perf_counter() - started,
        run.skipped,
        options,
    )


def _start_manifest(
    out_dir: Path, batch: BatchInfo, url_base: str, options: LabelOptions, resume: bool
) -> Manifest | None:
    """The output directory's manifest (none for ``--format none``: nothing to resume)."""
    from provmint.labelformats.manifest import Manifest, ManifestMismatch

    if options.fmt is LabelFormat.NONE:
        if resume:
            raise ConfigError("--resume needs label files to resume: not with --format none")
        return None
    header = {"batch_id": batch.batch_id, "url_base": url_base, "options": options.to_json()}
    try:
        return Manifest.start(out_dir, header, resume=resume)
    except ManifestMismatch as exc:
        raise ConfigError(
            str(exc), hint="resume with the options of the first run, or use a new --out"
        ) from exc
    except OSError as exc:
        raise os_error(exc, out_dir) from exc


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


def _label_pool(fmt: LabelFormat, workers: int, products: int) -> ProcessPoolExecutor | None:
    """A process pool when there are symbols to draw and enough of them to pay for one
    (up to one job's worth is drawn here: starting the workers would take longer).
    ZPL needs none: the printer draws the symbols."""
    drawn = fmt in (LabelFormat.SVG, LabelFormat.PNG, LabelFormat.PDF)
    if drawn and workers > 1 and products > _CHUNK:
        return start_pool(workers, preload=["numpy", "zxingcpp", "provmint.labelformats.jobs"])
    return None


@dataclass(slots=True)
class _LabelRun:
    """One ``render_labels`` run: what it draws and where, and how far it has got.

    The counters live here because progress is reported across parts: while a part's
    labels are drawn, the count shown is the earlier parts' labels plus this part's
    labels drawn so far.
    """

    store: Store
    batch: BatchInfo
    out_dir: Path
    url_base: str
    options: LabelOptions
    raw: bool
    progress: Callable[[int, int], None] | None
    pool: ProcessPoolExecutor | None = None
    manifest: Manifest | None = None
    labels: int = 0
    images: int = 0
    skipped: int = 0

    def write(self, csv_path: Path) -> None:
        """Write ``labels.csv`` part by part. A part's labels are drawn on the pool
        while the next part is read and its rows written (the pool would otherwise wait
        for the parent), so at most two parts are in memory at once."""
        with open_output(csv_path) as sink:
            text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
            out = LabelCsv(text, raw=self.raw)
            drawing: _Drawing | None = None
            for part_index in range(self.batch.parts):
                started = self._start_part(part_index, out)
                if drawing is not None:
                    self._finish(drawing)
                drawing = started
            if drawing is not None:
                self._finish(drawing)
            text.flush()
            text.detach()  # the sink is open_output's to finish

    def _start_part(self, part_index: int, out: LabelCsv) -> _Drawing | None:
        """One stored part: its CSV rows (each naming its label file), and its labels
        set drawing (none when there is nothing to draw, or the part is complete)."""
        from provmint.labelformats.jobs import PartLabels

        table = self.store.read_part(self.batch, part_index)
        labels = label_table(table, self.url_base)
        part = PartLabels.of(part_index, table.column("leaf_index").to_pylist(), labels)
        files = _label_files(self.options, part)
        out.write(labels, files)
        if self.manifest is None or part_index in self.manifest.done:
            self.skipped += len(part) if self.manifest is not None else 0
            self.labels += len(part)
            self._report(self.labels)
            return None
        return _Drawing(part_index, len(part), files, self._submit(part))

    def _submit(self, part: PartLabels) -> list[Future[int]]:
        """Start drawing ``part`` in jobs: on the pool, or here and now without one."""
        from concurrent.futures import Future

        from provmint.labelformats.jobs import draw, jobs_of

        jobs = jobs_of(part, self.options, self.out_dir, _CHUNK, _SHEETS_PER_FILE)
        if self.pool is not None:
            return [self.pool.submit(draw, job) for job in jobs]
        done: list[Future[int]] = []
        for job in jobs:
            future: Future[int] = Future()
            try:
                future.set_result(draw(job))
            except ValueError as exc:
                future.set_exception(exc)
            done.append(future)
        return done

    def _finish(self, drawing: _Drawing) -> None:
        """Wait for a part's jobs, in order, then make its files durable and list it in
        the manifest."""
        from provmint.labelformats.manifest import make_durable

        before = self.labels  # the earlier parts' labels
        drawn = 0
        try:
            for future in drawing.jobs:
                done = future.result()
                drawn += done
                self.images += done
                self._report(before + drawn)
        except ValueError as exc:  # a symbol zint refuses, a label too small for it
            raise ConfigError(str(exc)) from exc
        assert self.manifest is not None  # every format that draws has one
        make_durable(self.out_dir, drawing.files)
        self.manifest.complete(drawing.part, drawing.labels)
        self.labels += drawing.labels
        self._report(self.labels)

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(done, self.batch.products)


@dataclass(frozen=True, slots=True)
class _Drawing:
    """A part being drawn: its jobs' futures, and what to record once they are done."""

    part: int
    labels: int
    files: list[str]
    jobs: list[Future[int]]


def _label_files(options: LabelOptions, part: PartLabels) -> list[str]:
    """Each label's file, relative to the CSV ("" when no files are drawn)."""
    from provmint.labelformats.jobs import file_names

    return file_names(part, options, _SHEETS_PER_FILE)
