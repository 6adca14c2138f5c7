"""The options that shape a label, checked once (:meth:`LabelOptions.parse`) before
anything is read or written."""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Any

from provmint.errors import ConfigError
from provmint.labelformats.layout import DPIS, PAGES, Grid, LabelSize, parse_grid, parse_size
from provmint.labelformats.symbols import Content, Symbol, SymbolSpec

__all__ = ["CONTENTS", "FORMATS", "LEVELS", "SYMBOLS", "LabelFormat", "LabelOptions"]


class LabelFormat(Enum):
    """What ``labels`` writes besides the CSV."""

    SVG = "svg"
    PNG = "png"
    ZPL = "zpl"
    PDF = "pdf"
    NONE = "none"


FORMATS = tuple(f.value for f in LabelFormat)
SYMBOLS = tuple(s.value for s in Symbol)
CONTENTS = tuple(c.value for c in Content)
LEVELS = ("l", "m", "q", "h")
_MAX_QR_MAGNIFICATION = 10  # ^BQ's largest module


_QR_URL = SymbolSpec(Symbol.QR, Content.URL)
_LABEL_SIZE = LabelSize(50.0, 30.0)
_GRID = Grid(3, 7)


@dataclass(frozen=True, slots=True)
class LabelOptions:
    """Everything that shapes a label (the manifest's header holds these, so a resumed
    run draws its remaining parts exactly as the first run drew the others)."""

    fmt: LabelFormat = LabelFormat.SVG
    spec: SymbolSpec = _QR_URL
    scale: int = 4
    text: bool = True
    size: LabelSize = _LABEL_SIZE
    dpi: int = 203
    page: str = "a4"
    grid: Grid = _GRID

    @classmethod
    def parse(cls, **given: Any) -> LabelOptions:
        """Options from the command line's strings (``fmt``, ``symbol``, ``content``,
        ``level``, ``scale``, ``text``, ``size``, ``dpi``, ``page``, ``grid``); a bad one
        is a ConfigError before anything is read or written."""
        fmt = _choice(given.get("fmt", "svg"), FORMATS, "label format")
        symbol = _choice(given.get("symbol", "qr"), SYMBOLS, "symbol")
        content = _choice(given.get("content", "url"), CONTENTS, "content")
        level = str(given.get("level", "m")).lower()
        if level not in LEVELS:
            raise ConfigError(f"unknown error correction level {level!r}; use L, M, Q or H")
        scale = int(given.get("scale", 4))
        if not 1 <= scale <= 100:
            raise ConfigError("scale must be between 1 and 100")
        dpi = int(given.get("dpi", 203))
        if dpi not in DPIS:
            raise ConfigError(f"dpi must be one of {', '.join(map(str, DPIS))}")
        page = _choice(str(given.get("page", "a4")).lower(), tuple(PAGES), "page")
        if fmt == "zpl" and symbol == "qr" and scale > _MAX_QR_MAGNIFICATION:
            raise ConfigError(f"a ZPL QR code's module is at most {_MAX_QR_MAGNIFICATION} dots")
        return cls(
            fmt=LabelFormat(fmt),
            spec=SymbolSpec(Symbol(symbol), Content(content), level),
            scale=scale,
            text=bool(given.get("text", True)),
            size=parse_size(str(given.get("size", "50x30"))),
            dpi=dpi,
            page=page,
            grid=parse_grid(str(given.get("grid", "3x7"))),
        )

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form (the manifest's header)."""
        return {
            "format": self.fmt.value,
            "symbol": self.spec.symbol.value,
            "content": self.spec.content.value,
            "level": self.spec.level,
            "scale": self.scale,
            "text": self.text,
            "size": str(self.size),
            "dpi": self.dpi,
            "page": self.page,
            "grid": str(self.grid),
        }


def _choice(value: object, allowed: tuple[str, ...], what: str) -> str:
    text = str(value)
    if text not in allowed:
        raise ConfigError(f"unknown {what} {text!r}; use {', '.join(allowed)}")
    return text
