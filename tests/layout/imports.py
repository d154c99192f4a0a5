"""The imports of a package's modules, read from their source with `ast` (nothing is run).

Why static: importing each module in a fresh interpreter (the former layering test) took a
subprocess per module, saw only the imports that ran at import time, and so missed every
import inside a function, which is where lazy imports of heavy or optional dependencies live.
Reading the source sees all of them, in a few milliseconds per module.

Each import is recorded with where it stands, because the three kinds mean different things:

- `eager`: at module level (inside `if`/`try`/`class` too): it runs when the module is
  imported, so it pulls its target in at start-up;
- `deferred`: inside a function: it runs when the function is first called, a runtime
  dependency all the same;
- `type_only`: under `if TYPE_CHECKING:`: it never runs; it only names a type for the
  checker.
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

When = Literal["eager", "deferred", "type_only"]


@dataclass(frozen=True)
class Import:
    importer: str  # dotted name of the module whose source holds the import statement
    target: str  # dotted name of the module imported (a submodule when `from P import m` is one)
    when: When
    line: int


def module_name(path: Path, root: Path) -> tuple[str, bool]:
    """(dotted name, is a package) of a source file under `root`, the folder above the
    top-level package: src/veloxy/net/client.py -> ("veloxy.net.client", False)."""
    parts = list(path.relative_to(root).with_suffix("").parts)
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def read_sources(root: Path, package: str) -> dict[str, tuple[str, bool]]:
    """Dotted module name -> (source text, is a package) for every .py file of `package`."""
    return {name: (path.read_text(encoding="utf-8"), is_package)
            for path in sorted((root / package).rglob("*.py"))
            for name, is_package in [module_name(path, root)]}


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _statements(body: Iterable[ast.stmt], when: When) -> Iterator[tuple[ast.stmt, When]]:
    """Every statement under `body`, with when its imports would run."""
    for node in body:
        yield node, when
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            inner: When = "type_only" if when == "type_only" else "deferred"
            yield from _statements(node.body, inner)
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            yield from _statements(node.body, "type_only")
            yield from _statements(node.orelse, when)
        else:
            for field in ("body", "orelse", "finalbody", "handlers", "cases"):
                for child in getattr(node, field, ()):
                    if isinstance(child, ast.ExceptHandler | ast.match_case):
                        yield from _statements(child.body, when)
                    elif isinstance(child, ast.stmt):
                        yield from _statements([child], when)


def _resolve(module: str, is_package: bool, level: int, name: str | None) -> str:
    """The absolute name of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    base = module.split(".")
    if not is_package:
        base = base[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def imports_of(module: str, source: str, is_package: bool, known: set[str]) -> list[Import]:
    """The imports in `source` (the text of `module`); `known` holds the modules that exist,
    so that `from veloxy.h1 import parser` is an import of the submodule veloxy.h1.parser and
    `from veloxy.h1 import RequestHead` one of the package veloxy.h1."""
    found = []
    for node, when in _statements(ast.parse(source).body, "eager"):
        if isinstance(node, ast.Import):
            found += [Import(module, alias.name, when, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, is_package, node.level, node.module)
            for alias in node.names:
                sub = f"{base}.{alias.name}"
                found.append(Import(module, sub if sub in known else base, when, node.lineno))
    return found


def with_parents(name: str) -> list[str]:
    """Importing a.b.c runs a/__init__, a/b/__init__ and then c: ["a", "a.b", "a.b.c"]."""
    parts = name.split(".")
    return [".".join(parts[: i + 1]) for i in range(len(parts))]


@dataclass
class ImportGraph:
    """Every import of every module of a package, and what a module pulls in when it runs."""

    imports: dict[str, list[Import]]  # module -> its import statements

    @classmethod
    def from_sources(cls, sources: dict[str, tuple[str, bool]]) -> ImportGraph:
        known = set(sources)
        return cls({name: imports_of(name, text, is_package, known)
                    for name, (text, is_package) in sources.items()})

    def with_module(self, name: str, source: str, is_package: bool = False) -> ImportGraph:
        """This graph and one more module (parsed alone: the others are not read again)."""
        known = {*self.imports, name}
        return ImportGraph({**self.imports, name: imports_of(name, source, is_package, known)})

    def runtime_edges(self, module: str, eager_only: bool = False) -> Iterator[tuple[str, Import]]:
        """(module run, the import that runs it) for each import of `module` that can run:
        its target and the target's parent packages, which Python imports first."""
        for imp in self.imports.get(module, ()):
            if imp.when == "type_only" or (eager_only and imp.when == "deferred"):
                continue
            for name in with_parents(imp.target):
                if name != module:
                    yield name, imp

    def reach(self, module: str, eager_only: bool = False) -> dict[str, list[Import]]:
        """Every module that running `module` can import, directly or through others, with
        the chain of imports that leads there (for the failure message). `eager_only`: only
        what importing `module` itself runs, not what its functions import later."""
        chains: dict[str, list[Import]] = {}
        todo: list[tuple[str, list[Import]]] = [(name, []) for name in with_parents(module)]
        while todo:
            current, chain = todo.pop()
            if current in chains:
                continue
            chains[current] = chain
            for target, imp in self.runtime_edges(current, eager_only):
                if target not in chains:
                    todo.append((target, [*chain, imp]))
        del chains[module]
        return chains


def describe(chain: list[Import]) -> str:
    """"veloxy.a:12 -> veloxy.b (deferred), veloxy.b:3 -> veloxy.c": how a module got in."""
    return ", ".join(f"{imp.importer}:{imp.line} -> {imp.target}"
                     + ("" if imp.when == "eager" else f" ({imp.when})") for imp in chain)
