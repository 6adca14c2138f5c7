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
from typing import Any
from urllib.parse import quote

from provmint import csvsafe
from provmint.config import Settings
from provmint.errors import ConfigError, os_error
from provmint.outfile import is_stdout, open_output
from provmint.pool import start_pool
from provmint.products import LABEL_COLUMNS, catalog_view, label_table
from provmint.store import find_batch

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
    """Codes for a worker to draw: (url, file name) pairs into one directory."""

    directory: str
    items: list[tuple[str, str]]
    fmt: str
    level: str
    scale: int


def _render(job: _RenderJob) -> int:
    """Worker: render a job's codes. Top-level so a process pool can run it."""
    import segno

    from provmint.qrmask import installed

    os.makedirs(job.directory, exist_ok=True)
    with installed():  # segno's mask choice, computed with numpy (identical symbols)
        for url, name in job.items:
            code = segno.make(url, error=job.level, micro=False, boost_error=False)
            code.save(os.path.join(job.directory, name), kind=job.fmt, scale=job.scale, border=4)
    return len(job.items)


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

    if fmt not in FORMATS:
        raise ConfigError(f"unknown label format {fmt!r}; use {', '.join(FORMATS)}")
    if level.lower() not in LEVELS:
        raise ConfigError(f"unknown error correction level {level!r}; use L, M, Q or H")
    if not 1 <= scale <= 100:
        raise ConfigError("scale must be between 1 and 100")
    started = time.perf_counter()
    if is_stdout(out_dir):
        raise ConfigError(
            "labels writes a directory (codes and labels.csv), not standard output",
            hint="for the label CSV on standard output use: provmint batch export ID -o -",
        )
    with catalog_view(settings) as (store, view):
        batch = find_batch(view.batches, ref, store.root)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise os_error(exc, out_dir, action="creating") from exc
    csv_path = out_dir / "labels.csv"
    count = images = 0
    workers = workers or settings.workers
    pool = (
        start_pool(workers, preload=["segno"])
        if fmt != "none" and workers > 1 and batch.products > _CHUNK
        else None
    )
    try:
        with open_output(csv_path) as sink:
            text = io.TextIOWrapper(sink, encoding="utf-8", newline="")
            out = csvsafe.csv_writer(text)
            out.writerow([*LABEL_COLUMNS, "qr_file"])
            for part_index in range(batch.parts):
                table = store.read_part(batch, part_index)
                labels = label_table(table)
                columns = {
                    name: labels.column(name).to_pylist() for name in ("gtin", "serial", "url")
                }
                leaves = table.column("leaf_index").to_pylist()
                directory = f"part-{part_index:05d}"
                names = (
                    [""] * len(leaves)
                    if fmt == "none"
                    else [
                        image_name(leaf, g, s, fmt)
                        for leaf, g, s in zip(
                            leaves, columns["gtin"], columns["serial"], strict=True
                        )
                    ]
                )
                shown = labels if raw else csvsafe.neutralise_table(labels)
                out.writerows(
                    zip(
                        *(shown.column(c).to_pylist() for c in LABEL_COLUMNS),
                        (f"{directory}/{name}" if name else "" for name in names),
                        strict=True,
                    )
                )
                if fmt != "none":
                    jobs = [
                        _RenderJob(
                            directory=str(out_dir / directory),
                            items=list(
                                zip(
                                    columns["url"][i : i + _CHUNK],
                                    names[i : i + _CHUNK],
                                    strict=True,
                                )
                            ),
                            fmt=fmt,
                            level=level.lower(),
                            scale=scale,
                        )
                        for i in range(0, len(leaves), _CHUNK)
                    ]
                    done_iter = pool.map(_render, jobs) if pool else map(_render, jobs)
                    for done in done_iter:
                        images += done
                        if progress is not None:
                            progress(count + min(images - count, len(leaves)), batch.products)
                count += len(leaves)
                if progress is not None:
                    progress(count, batch.products)
            text.flush()
            text.detach()  # the sink is open_output's to finish
    except OSError as exc:  # writing a code image (the CSV's own errors are mapped already)
        raise os_error(exc, out_dir) from exc
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
    return LabelSummary(
        batch.batch_id, count, images, str(csv_path), str(out_dir), time.perf_counter() - started
    )
