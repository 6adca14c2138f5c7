"""The import-layer contract: imports flow one way, foundation <- core <- edges <- verbs
<- command line, as the README's architecture says.

Every import in ``src/provmint`` counts, including those inside functions (provmint
imports heavy modules lazily, and a lazy import is still a dependency). A module may
import its own layer or a lower one. The core and the foundation import nothing outside
the standard library (the core may use the C kernel, ``_native``, which computes the
same bytes as the core and does no I/O). Nothing but ``__main__`` imports the command
line.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "provmint"

FOUNDATION, CORE, EDGE, VERB, FRONT = range(5)
LAYER_NAMES = ("foundation", "core", "edge", "verb", "front")
LAYERS: dict[str, int] = {
    "provmint.errors": FOUNDATION,
    "provmint.config": FOUNDATION,
    # Pure, format-critical, pinned by vectors.
    "provmint.canonical": CORE,
    "provmint.merkle": CORE,
    "provmint.tokens": CORE,
    "provmint.keyhash": CORE,
    "provmint.anchoring": CORE,
    "provmint.proofs": CORE,
    "provmint.gs1": CORE,
    "provmint.verifiercall": CORE,  # the ABI-encoded call of the Solidity verifier
    "provmint._native": CORE,
    # Files, processes, the node, the store.
    "provmint.ingest": EDGE,
    "provmint.store": EDGE,
    "provmint.keys": EDGE,
    "provmint.chain": EDGE,
    "provmint.chainread": EDGE,  # the stdlib JSON-RPC reader verification uses
    "provmint.engine": EDGE,
    "provmint.minting": EDGE,
    "provmint.pool": EDGE,
    "provmint._forkserver": EDGE,
    "provmint.outfile": EDGE,
    "provmint.pendingfile": EDGE,  # replacing a file whole: store files and outputs
    "provmint.supervisor": EDGE,
    "provmint.devchain": EDGE,  # a local anvil for development (provmint devchain)
    "provmint.edge": EDGE,  # the service's client address, rate limit, HTTP limits
    "provmint.metrics": EDGE,  # Prometheus metrics of a service's processes
    "provmint.csvsafe": EDGE,  # Arrow compute over label and export columns
    "provmint.qrmask": EDGE,  # QR symbols through segno and numpy
    "provmint.labelformats": EDGE,  # label symbols and files: zxing-cpp, numpy, fpdf2
    # What users do.
    "provmint.batch": VERB,
    "provmint.anchor": VERB,
    "provmint.products": VERB,
    "provmint.verify": VERB,
    "provmint.audit": VERB,
    "provmint.scan": VERB,
    "provmint.labels": VERB,
    "provmint.server": VERB,
    "provmint.publicpage": VERB,  # the public page the service renders (words, looks)
    "provmint.repair": VERB,
    "provmint.verifier": VERB,  # the browser verifier page (provmint verifier-page, /verify)
    "provmint.stats": VERB,  # provmint stats: the store and its scans at a glance
    "provmint.dashboard": VERB,  # the operator's read-only web pages
    # The faces: the command line, the package's re-exports, python -m provmint.
    "provmint.cli": FRONT,
    "provmint": FRONT,
    "provmint.__main__": FRONT,
}
STDLIB_ONLY = {FOUNDATION, CORE}

# Standard-library modules of other CPython versions than the one running the test:
# _sha2 is 3.12's SHA-2 module (provmint.tokens takes it when present, else 3.11's _sha256).
STDLIB_ELSEWHERE = {"_sha2"}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC.parent).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer_of(module: str) -> int | None:
    """The layer of a provmint module: that of its longest listed prefix."""
    parts = module.split(".")
    if parts == ["provmint"]:
        return LAYERS["provmint"]
    for end in range(len(parts), 1, -1):  # "provmint" alone is the package, not a prefix
        found = LAYERS.get(".".join(parts[:end]))
        if found is not None:
            return found
    return None


def imports_of(path: Path, module: str) -> set[str]:
    """Every module ``path`` imports, anywhere in it (``from x import y`` counts as x.y
    too, since y may be a submodule)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join([*anchor, base] if base else anchor)
            found.add(base)
            found.update(f"{base}.{alias.name}" for alias in node.names)
    return found


def graph() -> dict[str, set[str]]:
    """Module -> the modules it imports, for every module under src/provmint."""
    return {module_name(p): imports_of(p, module_name(p)) for p in sorted(SRC.rglob("*.py"))}


def violations(edges: dict[str, set[str]]) -> list[str]:
    """Each import that breaks the contract, as one readable line."""
    found = []
    for module, targets in sorted(edges.items()):
        own = layer_of(module)
        if own is None:
            found.append(f"{module}: not in the layer table (add it to LAYERS)")
            continue
        for target in sorted(targets):
            top = target.split(".")[0]
            if top != "provmint":
                stdlib = top in sys.stdlib_module_names or top in STDLIB_ELSEWHERE
                outside = not stdlib and top != "__future__"
                if own in STDLIB_ONLY and outside:
                    found.append(
                        f"{module} ({LAYER_NAMES[own]}) imports {target}: "
                        "the core and foundation use the standard library only"
                    )
                continue
            if target == "provmint":
                # The package itself runs first for any of its modules, and re-exports
                # lazily (from provmint import __version__, merkle): not a dependency.
                continue
            other = layer_of(target)
            if other is None:
                continue  # an attribute of the package (every module is in the table)
            if (
                target.startswith("provmint.cli")
                and module != "provmint.__main__"
                and not (module.startswith("provmint.cli"))
            ):
                found.append(f"{module} imports {target}: only __main__ imports the CLI")
            elif other > own:
                found.append(
                    f"{module} ({LAYER_NAMES[own]}) imports {target} "
                    f"({LAYER_NAMES[other]}): imports flow downwards only"
                )
    return found


def test_the_source_keeps_the_layers() -> None:
    edges = graph()
    assert len(edges) > 40  # every module was read
    assert violations(edges) == []


@pytest.mark.parametrize(
    ("edges", "expected"),
    [
        ({"provmint.merkle": {"provmint.store"}}, "imports flow downwards"),
        ({"provmint.store.lookup": {"provmint.products.find"}}, "imports flow downwards"),
        ({"provmint.tokens": {"numpy"}}, "standard library only"),
        ({"provmint.errors": {"rich.console"}}, "standard library only"),
        ({"provmint.server": {"provmint.cli._common"}}, "only __main__ imports the CLI"),
        ({"provmint.newthing": {"os"}}, "not in the layer table"),
    ],
)
def test_the_checker_sees_each_kind_of_break(edges: dict[str, set[str]], expected: str) -> None:
    found = violations(edges)
    assert len(found) == 1 and expected in found[0], found


def test_relative_imports_are_resolved(tmp_path: Path) -> None:
    source = SRC / "store" / "scanlog" / "sqlite.py"
    assert "provmint.store.scanlog" in imports_of(source, "provmint.store.scanlog.sqlite")
