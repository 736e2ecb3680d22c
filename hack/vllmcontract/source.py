"""A vLLM wheel read as source: modules parsed with `ast` on demand, names resolved through imports.

Nothing here imports or runs vLLM; the wheel is a zip of .py files we only parse.
"""

from __future__ import annotations

import ast
import zipfile
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class Def:
    """Where a name leads: a class, a function, or a module-level value (an assignment)."""

    module: str
    kind: str  # "class" | "function" | "value" | "module"
    node: ast.AST | None


class Wheel:
    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path)
        self.files = {n for n in self._zip.namelist() if n.endswith(".py")}
        self._parsed: dict[str, ast.Module] = {}

    def file_of(self, module: str) -> str | None:
        base = module.replace(".", "/")
        for candidate in (f"{base}.py", f"{base}/__init__.py"):
            if candidate in self.files:
                return candidate
        return None

    def has_module(self, module: str) -> bool:
        return self.file_of(module) is not None

    def module(self, module: str) -> ast.Module:
        if module not in self._parsed:
            name = self.file_of(module)
            if name is None:
                raise KeyError(f"no module {module} in {self.path.name}")
            self._parsed[module] = ast.parse(self._zip.read(name), filename=name)
        return self._parsed[module]

    def modules_under(self, prefix: str) -> list[str]:
        """Dotted names of every module in the package `prefix` (sorted, so output is stable)."""
        root = prefix.replace(".", "/") + "/"
        out = []
        for name in sorted(self.files):
            if name.startswith(root):
                dotted = name.removesuffix(".py").replace("/", ".")
                out.append(dotted.removesuffix(".__init__"))
        return out

    def _import_base(self, module: str, node: ast.ImportFrom) -> str:
        if not node.level:
            return node.module or ""
        is_package = (self.file_of(module) or "").endswith("__init__.py")
        parts = module.split(".")
        keep = len(parts) - node.level + (1 if is_package else 0)
        base = ".".join(parts[:keep])
        return f"{base}.{node.module}" if node.module else base

    def resolve(self, module: str, name: str, _depth: int = 0) -> Def | None:
        """What `name` means at the top level of `module`, following `from x import y` chains."""
        if _depth > 20 or not self.has_module(module):
            return None
        found: Def | None = None
        for node in self.module(module).body:
            nodes: list[ast.stmt] = [node]
            if isinstance(node, ast.If):  # `if TYPE_CHECKING:` imports and version branches
                nodes = [*node.body, *node.orelse]
            for stmt in nodes:
                hit = self._binds(module, stmt, name, _depth)
                if hit is not None:
                    found = hit  # the last binding wins, as it would at import time
        return found

    def _binds(self, module: str, stmt: ast.stmt, name: str, depth: int) -> Def | None:
        if isinstance(stmt, ast.ClassDef) and stmt.name == name:
            return Def(module, "class", stmt)
        if isinstance(stmt, ast.FunctionDef | ast.AsyncFunctionDef) and stmt.name == name:
            return Def(module, "function", stmt)
        if isinstance(stmt, ast.Assign):
            for target in stmt.targets:
                if isinstance(target, ast.Name) and target.id == name:
                    return Def(module, "value", stmt.value)
        if (
            isinstance(stmt, ast.AnnAssign)
            and isinstance(stmt.target, ast.Name)
            and stmt.target.id == name
            and stmt.value is not None
        ):
            return Def(module, "value", stmt.value)
        type_alias = getattr(ast, "TypeAlias", None)  # `type X = ...` (Python 3.12+ sources)
        if type_alias is not None and isinstance(stmt, type_alias) and stmt.name.id == name:
            return Def(module, "value", stmt.value)
        if isinstance(stmt, ast.ImportFrom):
            base = self._import_base(module, stmt)
            for alias in stmt.names:
                if (alias.asname or alias.name) == name:
                    sub = f"{base}.{alias.name}"
                    if self.has_module(sub):
                        return Def(sub, "module", None)
                    return self.resolve(base, alias.name, depth + 1) or Def(
                        f"{base}.{alias.name}", "external", None
                    )
        if isinstance(stmt, ast.Import):
            for alias in stmt.names:
                if (alias.asname or alias.name.split(".")[0]) == name:
                    return Def(alias.name if alias.asname else name, "module", None)
        return None

    def resolve_expr(self, module: str, expr: ast.expr) -> Def | None:
        """`Name` or `module.Name` attribute chains."""
        if isinstance(expr, ast.Name):
            return self.resolve(module, expr.id)
        if isinstance(expr, ast.Attribute):
            owner = self.resolve_expr(module, expr.value)
            if owner is not None and owner.kind == "module":
                return self.resolve(owner.module, expr.attr)
        return None


def class_bases(wheel: Wheel, d: Def) -> list[Def]:
    """`d` (a class) and its bases found in the wheel, in method-resolution order (depth first)."""
    assert isinstance(d.node, ast.ClassDef)
    out = [d]
    for base in d.node.bases:
        found = wheel.resolve_expr(d.module, base)
        if found is not None and found.kind == "class":
            out += class_bases(wheel, found)
    return out


def find_method(wheel: Wheel, d: Def, name: str) -> tuple[Def, ast.FunctionDef] | None:
    for owner in class_bases(wheel, d):
        assert isinstance(owner.node, ast.ClassDef)
        for stmt in owner.node.body:
            if isinstance(stmt, ast.FunctionDef) and stmt.name == name:
                return owner, stmt
    return None
