"""A part's labels cut into jobs, and the jobs that draw them (in pool workers: each job
is a picklable dataclass, :func:`draw` a top-level function)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol
from urllib.parse import quote

from provmint.labelformats.images import (
    ImageStyle,
    png_images,
    svg_bytes,
    svg_paths,
    text_lines,
)
from provmint.labelformats.pdf import SheetLabel, SheetLayout, sheet_pdf
from provmint.labelformats.symbols import QUIET, SymbolSpec, modules
from provmint.labelformats.zpl import ZplLayout, label_zpl

if TYPE_CHECKING:
    import pyarrow as pa

    from provmint.labelformats.options import LabelOptions

__all__ = ["PartLabels", "draw", "file_names", "image_name", "jobs_of"]


@dataclass(frozen=True, slots=True)
class PartLabels:
    """One stored part's labels, as plain lists (raw values, not spreadsheet-safe)."""

    index: int
    leaves: list[int]
    gtins: list[str]
    serials: list[str]
    urls: list[str]
    elements: list[str]
    hris: list[str]

    @classmethod
    def of(cls, index: int, leaves: list[int], labels: pa.Table) -> PartLabels:
        """From a :func:`provmint.products.label_table`."""
        column = labels.column
        return cls(
            index,
            leaves,
            column("gtin").to_pylist(),
            column("serial").to_pylist(),
            column("url").to_pylist(),
            column("element_string").to_pylist(),
            column("human_readable").to_pylist(),
        )

    def __len__(self) -> int:
        return len(self.leaves)

    @property
    def directory(self) -> str:
        """The part's directory (SVG, PNG, PDF) or file stem (ZPL) in the output."""
        return f"part-{self.index:05d}"

    def payloads(self, spec: SymbolSpec) -> list[str]:
        """What each label's symbol carries."""
        return self.elements if spec.gs1 else self.urls


def image_name(leaf: int, gtin14: str, serial: str, fmt: str) -> str:
    """File name of a product's label image (stable, unique, file-system safe)."""
    return f"{leaf:07d}-{gtin14}-{quote(serial, safe='')}.{fmt}"


def _sheet_labels(options: LabelOptions, sheets_per_file: int) -> int:
    return options.grid.per_sheet * sheets_per_file


def file_names(part: PartLabels, options: LabelOptions, sheets_per_file: int) -> list[str]:
    """Each label's file, relative to the output directory ("" for ``none``)."""
    fmt = options.fmt.value
    if fmt in ("svg", "png"):
        return [
            f"{part.directory}/{image_name(leaf, gtin, serial, fmt)}"
            for leaf, gtin, serial in zip(part.leaves, part.gtins, part.serials, strict=True)
        ]
    if fmt == "zpl":
        return [f"{part.directory}.zpl"] * len(part)
    if fmt == "pdf":
        per_file = _sheet_labels(options, sheets_per_file)
        return [
            f"{part.directory}/sheets-{part.leaves[i - i % per_file]:07d}.pdf"
            for i in range(len(part))
        ]
    return [""] * len(part)


class _Job(Protocol):
    def run(self) -> int: ...


def draw(job: _Job) -> int:
    """Worker: run one job; the number of labels it drew. Top-level for the pool."""
    return job.run()


def _write(path: str, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)


_PATHS_TOGETHER = 512
"""Symbols whose SVG paths or PNG images are built in one go."""


@dataclass(frozen=True, slots=True)
class ImageJob:
    """SVG or PNG files, one per label, into one directory."""

    paths: list[str]
    payloads: list[str]
    hris: list[str]
    spec: SymbolSpec
    style: ImageStyle
    png: bool

    def run(self) -> int:
        quiet = QUIET[self.spec.symbol]
        matrices = modules(self.spec, self.payloads)
        if self.png:
            for i in range(0, len(matrices), _PATHS_TOGETHER):
                some = slice(i, i + _PATHS_TOGETHER)
                pngs = png_images(matrices[some], quiet, self.style, self.hris[some])
                for path, png in zip(self.paths[some], pngs, strict=True):
                    _write(path, png)
        else:
            step = _PATHS_TOGETHER  # bounds the run arrays' memory (~20 MB a step)
            runs = [
                d
                for i in range(0, len(matrices), step)
                for d in svg_paths(matrices[i : i + step], quiet)
            ]
            for path, matrix, hri, d in zip(self.paths, matrices, self.hris, runs, strict=True):
                _write(path, svg_bytes(matrix, quiet, self.style, hri, d))
        return len(self.paths)


@dataclass(frozen=True, slots=True)
class PdfJob:
    """One PDF of label sheets."""

    path: str
    payloads: list[str]
    hris: list[str]
    spec: SymbolSpec
    layout: SheetLayout

    def run(self) -> int:
        quiet = QUIET[self.spec.symbol]
        labels = [
            SheetLabel(matrix, quiet, text_lines(hri))
            for matrix, hri in zip(modules(self.spec, self.payloads), self.hris, strict=True)
        ]
        _write(self.path, sheet_pdf(self.layout, labels))
        return len(labels)


@dataclass(frozen=True, slots=True)
class ZplJob:
    """One part's ZPL stream. The symbol is the printer's to draw: the longest payload
    is encoded here once, to check it fits the label and to place the text beside it."""

    path: str
    payloads: list[str]
    hris: list[str]
    spec: SymbolSpec
    layout: ZplLayout

    def run(self) -> int:
        longest = max(self.payloads, key=len)
        size = max(modules(self.spec, [longest])[0].shape)
        self.layout.check(self.spec, size)
        with open(self.path, "w", encoding="utf-8", newline="\n") as fh:
            fh.writelines(
                label_zpl(self.layout, self.spec, payload, text_lines(hri), size)
                for payload, hri in zip(self.payloads, self.hris, strict=True)
            )
        return len(self.payloads)


def jobs_of(
    part: PartLabels, options: LabelOptions, out_dir: Path, chunk: int, sheets_per_file: int
) -> Iterator[Any]:
    """The jobs that draw ``part`` (its directory made first)."""
    fmt, spec = options.fmt.value, options.spec
    payloads = part.payloads(spec)
    if fmt == "zpl":
        layout = ZplLayout(options.size, options.dpi, options.scale, options.text)
        path = str(out_dir / f"{part.directory}.zpl")
        yield ZplJob(path, payloads, part.hris, spec, layout)
        return
    directory = out_dir / part.directory
    directory.mkdir(exist_ok=True)
    names = file_names(part, options, sheets_per_file)
    if fmt == "pdf":
        sheet = SheetLayout(options.page, options.grid, options.text)
        step = _sheet_labels(options, sheets_per_file)
        for i in range(0, len(part), step):
            path = str(out_dir / names[i])
            yield PdfJob(path, payloads[i : i + step], part.hris[i : i + step], spec, sheet)
        return
    style = ImageStyle(options.scale, options.text)
    for i in range(0, len(part), chunk):
        paths = [str(out_dir / name) for name in names[i : i + chunk]]
        yield ImageJob(
            paths, payloads[i : i + chunk], part.hris[i : i + chunk], spec, style, fmt == "png"
        )
