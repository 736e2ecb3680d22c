"""The flags of `vllm serve`, read from the wheel's source.

vLLM builds its parser from dataclass fields: `get_kwargs(SomeConfig)` turns each field's type
annotation into argparse keyword arguments (vllm/engine/arg_utils.py `_compute_kwargs`), and
`add_cli_args` methods pass them to `add_argument`. This module re-does both on the AST: the type
rules of `_compute_kwargs` (bool -> --x/--no-x, Literal -> choices, list -> nargs "+", ...) and
a small interpreter for the statements `add_cli_args` and `make_arg_parser` use (assignments,
dict edits, `if` (both branches when the test is unknown), `for` over known values, calls into
other `add_cli_args`). Anything it cannot evaluate is kept as an `Unknown` with its source text,
so a new pattern in a later vLLM shows up in the contract rather than being silently dropped.
"""

from __future__ import annotations

import ast
import copy
from dataclasses import dataclass
from typing import Any

from vllmcontract.source import Def, Wheel, class_bases, find_method


@dataclass(frozen=True)
class Unknown:
    src: str


@dataclass(frozen=True)
class TypeRef:
    """A callable given as argparse `type=`/`action=`, by its name (int, json.loads, ...)."""

    name: str


@dataclass(frozen=True)
class ClassRef:
    d: Def


class ParserRef:
    """The parser (or an argument group of it): `add_argument` on it records a flag."""


# Calls that receive the parser but add no flag on CUDA: the platform hook's base implementation
# (vllm/platforms/interface.py) is `pass`; only out-of-tree platforms and ROCm override it.
_PLATFORM_HOOKS = {"current_platform.pre_register_and_update"}

_BUILTIN_TYPES = {"int", "float", "str", "bool", "dict", "list", "tuple", "set", "bytes"}


# --- type annotations -> argparse kwargs (vllm/engine/arg_utils.py _compute_kwargs) -------------


@dataclass(frozen=True)
class Hint:
    kind: str  # none literal bool int float str list tuple set dict dataclass other any
    values: tuple[Any, ...] = ()  # literal values
    elem: tuple[Hint, ...] = ()  # collection element hints
    ellipsis: bool = False


def _is_dataclass(wheel: Wheel, d: Def) -> bool:
    assert isinstance(d.node, ast.ClassDef)
    for owner in class_bases(wheel, d):
        assert isinstance(owner.node, ast.ClassDef)
        for deco in owner.node.decorator_list:
            target = deco.func if isinstance(deco, ast.Call) else deco
            name = ast.unparse(target)
            if name.split(".")[-1] in ("dataclass", "config"):
                return True
    return False


def _is_dict_subclass(wheel: Wheel, d: Def) -> bool:
    assert isinstance(d.node, ast.ClassDef)
    return any(ast.unparse(b) in ("dict", "Dict") for b in d.node.bases)


def hints(wheel: Wheel, module: str, ann: ast.expr | None, depth: int = 0) -> list[Hint]:
    """get_type_hints() on an annotation: Optional/Union/| flattened, Annotated unwrapped."""
    if ann is None or depth > 30:
        return [Hint("any")]
    if isinstance(ann, ast.Constant):
        if ann.value is None:
            return [Hint("none")]
        if isinstance(ann.value, str):  # a forward reference
            return hints(wheel, module, ast.parse(ann.value, mode="eval").body, depth + 1)
        if ann.value is Ellipsis:
            return [Hint("ellipsis")]
    if isinstance(ann, ast.BinOp) and isinstance(ann.op, ast.BitOr):
        return [
            *hints(wheel, module, ann.left, depth + 1),
            *hints(wheel, module, ann.right, depth + 1),
        ]
    if isinstance(ann, ast.Subscript):
        origin = ast.unparse(ann.value).split(".")[-1]
        args = list(ann.slice.elts) if isinstance(ann.slice, ast.Tuple) else [ann.slice]
        if origin == "Optional":
            return [*hints(wheel, module, args[0], depth + 1), Hint("none")]
        if origin == "Union":
            return [h for a in args for h in hints(wheel, module, a, depth + 1)]
        if origin in ("Annotated", "SkipValidation"):  # SkipValidation[X] is Annotated[X, ...]
            return hints(wheel, module, args[0], depth + 1)
        if origin == "Literal":
            return [Hint("literal", values=tuple(_literal_values(wheel, module, args, depth)))]
        if origin in ("list", "List", "Sequence", "MutableSequence"):
            return [Hint("list", elem=tuple(hints(wheel, module, args[0], depth + 1)))]
        if origin in ("set", "Set", "frozenset", "AbstractSet"):
            return [Hint("set", elem=tuple(hints(wheel, module, args[0], depth + 1)))]
        if origin in ("tuple", "Tuple"):
            elems = [a for a in args if not (isinstance(a, ast.Constant) and a.value is Ellipsis)]
            return [
                Hint(
                    "tuple",
                    elem=tuple(h for a in elems[:1] for h in hints(wheel, module, a, depth + 1)),
                    values=(len(elems),),
                    ellipsis=len(elems) != len(args),
                )
            ]
        if origin in ("dict", "Dict", "Mapping", "MutableMapping"):
            return [Hint("dict")]
        if origin in ("type", "Type", "Callable"):
            return [Hint("other")]
        return hints(wheel, module, ann.value, depth + 1)
    if isinstance(ann, ast.Name | ast.Attribute):
        name = ast.unparse(ann)
        if name in ("None", "NoneType"):
            return [Hint("none")]
        if name in ("Any", "typing.Any", "object"):
            return [Hint("any")]
        if name in _BUILTIN_TYPES:
            return [Hint(name)]
        if name in ("List", "Dict", "Tuple", "Set"):
            return [Hint(name.lower())]
        d = wheel.resolve_expr(module, ann)
        if d is not None and d.kind == "value":
            assert isinstance(d.node, ast.expr)
            if _looks_like_type(d.node):
                return hints(wheel, d.module, d.node, depth + 1)
            return [Hint("other")]
        if d is not None and d.kind == "class":
            if _is_dataclass(wheel, d):
                return [Hint("dataclass", values=(name,))]
            if _is_dict_subclass(wheel, d):
                return [Hint("dict")]
        return [Hint("other")]
    return [Hint("other")]


def _looks_like_type(node: ast.expr) -> bool:
    if isinstance(node, ast.Subscript):
        return ast.unparse(node.value).split(".")[-1] in (
            "Literal", "Union", "Optional", "Annotated", "list", "dict", "tuple", "set", "List",
            "Dict", "Tuple", "Type", "type", "Callable",
        )  # fmt: skip
    if isinstance(node, ast.BinOp):
        return isinstance(node.op, ast.BitOr)
    return isinstance(node, ast.Name | ast.Attribute)


def _literal_values(wheel: Wheel, module: str, args: list[ast.expr], depth: int) -> list[Any]:
    out: list[Any] = []
    for a in args:
        if isinstance(a, ast.Constant):
            out.append(a.value)
        else:  # Literal[Literal[...], ...] and aliases flatten
            for h in hints(wheel, module, a, depth + 1):
                if h.kind == "literal":
                    out += h.values
    return out


def _has(hs: list[Hint], kind: str) -> bool:
    return any(h.kind == kind for h in hs)


def _builtin_elem(hs: tuple[Hint, ...]) -> str:
    """The element type of list[X]: X, or str for a union containing str (as vLLM asserts)."""
    kinds = [h.kind for h in hs if h.kind != "none"]
    if len(kinds) == 1 and kinds[0] in ("int", "float", "str", "bool"):
        return kinds[0]
    if len(kinds) == 1 and kinds[0] == "literal":
        return "str"
    return "str"


def field_kwargs(
    wheel: Wheel, module: str, name: str, ann: ast.expr | None, default: Any
) -> dict[str, Any]:
    """The argparse kwargs `_compute_kwargs` would give one dataclass field."""
    hs = hints(wheel, module, ann)
    hs = [Hint("dict") if False else h for h in hs]
    kw: dict[str, Any] = {"default": default}
    kinds = {h.kind for h in hs}
    if _has(hs, "dataclass"):
        kw["type"] = TypeRef("json")
    elif kinds == {"bool", "str", "none"}:  # vLLM >= 0.2x: bare flag -> True, value -> str
        kw["type"], kw["nargs"] = TypeRef("str"), "?"
    elif _has(hs, "bool"):
        kw["action"] = TypeRef("BooleanOptionalAction")
    elif _has(hs, "literal"):
        lit = next(h for h in hs if h.kind == "literal")
        values = list(lit.values)
        kw["type"] = TypeRef(type(values[0]).__name__ if values else "str")
        if _has(hs, "str"):
            kw["metavar"] = sorted(values)
        else:
            kw["choices"] = sorted(values)
    elif _has(hs, "tuple"):
        t = next(h for h in hs if h.kind == "tuple")
        kw["type"] = TypeRef(_builtin_elem(t.elem))
        kw["nargs"] = "+" if t.ellipsis else t.values[0]
    elif _has(hs, "list") or _has(hs, "set"):
        t = next(h for h in hs if h.kind in ("list", "set"))
        kw["type"] = TypeRef(_builtin_elem(t.elem))
        kw["nargs"] = "+"
    elif _has(hs, "int"):
        kw["type"] = TypeRef(_human_readable(wheel).get(name, "int"))
    elif _has(hs, "float"):
        kw["type"] = TypeRef("float")
    elif _has(hs, "dict") and (_has(hs, "str") or _has(hs, "other")):
        kw["type"] = TypeRef("json_or_str")
    elif _has(hs, "dict"):
        kw["type"] = TypeRef("json")
    else:  # str, non-builtin classes (enums, torch.dtype) and Any
        kw["type"] = TypeRef("str")
    if _has(hs, "none") and not _has(hs, "bool"):
        kw["nullable"] = True
        if kw.get("choices"):
            kw["choices"].append(None)
    return kw


_HUMAN: dict[str, dict[str, str]] = {}


def _human_readable(wheel: Wheel) -> dict[str, str]:
    """Int fields `_compute_kwargs` parses as human-readable (1k, 2M; "auto" for max_model_len in
    later releases): read from its set literal and `name == "..."` tests, as each release lists
    them there."""
    key = str(wheel.path)
    if key in _HUMAN:
        return _HUMAN[key]
    found: dict[str, str] = {}
    fn = wheel.resolve("vllm.engine.arg_utils", "_compute_kwargs")
    if fn is not None and fn.node is not None:
        for node in ast.walk(fn.node):
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Set):
                target = ast.unparse(node.targets[0])
                if "human_readable" in target:
                    for elt in node.value.elts:
                        if isinstance(elt, ast.Constant):
                            found[str(elt.value)] = "human_int"
            if isinstance(node, ast.If) and isinstance(node.test, ast.Compare):
                right = node.test.comparators[0]
                body = " ".join(ast.unparse(b) for b in node.body)
                if isinstance(right, ast.Constant) and isinstance(node.test.ops[0], ast.Eq):
                    if "human_readable_int_or_auto" in body:
                        found[str(right.value)] = "human_int_or_auto"
                    elif "human_readable_int" in body:
                        found[str(right.value)] = "human_int"
    _HUMAN[key] = found
    return found


def _field_default(wheel: Wheel, module: str, value: ast.expr | None) -> Any:
    if value is None:
        return None
    if isinstance(value, ast.Call) and ast.unparse(value.func).split(".")[-1] in ("field", "Field"):
        for kw in value.keywords:
            if kw.arg == "default":
                return _field_default(wheel, module, kw.value)
            if kw.arg == "default_factory":
                f = kw.value
                if isinstance(f, ast.Lambda):
                    return _literal(f.body)
                name = ast.unparse(f)
                if name in ("list", "dict", "set", "tuple"):
                    return [] if name != "dict" else {}
                return Unknown(f"{name}()")
        if value.args:
            return _field_default(wheel, module, value.args[0])
        return None
    if isinstance(value, ast.Name):
        found = wheel.resolve(module, value.id)
        if found is not None and found.kind == "value" and isinstance(found.node, ast.expr):
            return _literal(found.node)
    return _literal(value)


def _literal(node: ast.expr) -> Any:
    try:
        v = ast.literal_eval(node)
    except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
        return Unknown(ast.unparse(node))
    if isinstance(v, tuple | set | frozenset):
        return sorted(v) if isinstance(v, set | frozenset) else list(v)
    return v


def class_fields(wheel: Wheel, d: Def) -> dict[str, tuple[str, ast.expr | None, ast.expr | None]]:
    """Fields of a dataclass (bases first, as dataclasses.fields orders them):
    name -> (module, annotation, default expression)."""
    out: dict[str, tuple[str, ast.expr | None, ast.expr | None]] = {}
    for owner in reversed(class_bases(wheel, d)):
        assert isinstance(owner.node, ast.ClassDef)
        for stmt in owner.node.body:
            if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name):
                if "ClassVar" in ast.unparse(stmt.annotation) or "InitVar" in ast.unparse(
                    stmt.annotation
                ):
                    continue
                out[stmt.target.id] = (owner.module, stmt.annotation, stmt.value)
    return out


def get_kwargs(wheel: Wheel, d: Def) -> dict[str, dict[str, Any]]:
    out = {}
    for name, (module, ann, value) in class_fields(wheel, d).items():
        out[name] = field_kwargs(wheel, module, name, ann, _field_default(wheel, module, value))
    return out


# --- the interpreter for add_cli_args / make_arg_parser ------------------------------------------


class Return(Exception):  # noqa: N818 (control flow, not an error)
    def __init__(self, value: Any) -> None:
        self.value = value


@dataclass
class Flag:
    names: list[str]
    kwargs: dict[str, Any]


class Interpreter:
    def __init__(self, wheel: Wheel) -> None:
        self.wheel = wheel
        self.flags: list[Flag] = []
        self.unknown: list[str] = []

    def call_method(self, d: Def, method: str, args: list[Any], cls: Def | None = None) -> Any:
        found = find_method(self.wheel, d, method)
        if found is None:
            raise KeyError(f"{method} not found on {d.module}")
        owner, fn = found
        env: dict[str, Any] = {}
        params = [a.arg for a in fn.args.args]
        is_static = any(ast.unparse(x) == "staticmethod" for x in fn.decorator_list)
        if not is_static and params:
            env[params[0]] = ClassRef(cls or d)
            params = params[1:]
        for p, v in zip(params, args, strict=False):
            env[p] = v
        for param, default in zip(reversed(fn.args.args), reversed(fn.args.defaults), strict=False):
            env.setdefault(param.arg, self.eval(default, env, owner.module, cls or d))
        try:
            self.run(fn.body, env, owner.module, cls or d, owner)
        except Return as r:
            return r.value
        return None

    def call_function(self, d: Def, args: list[Any]) -> Any:
        fn = d.node
        assert isinstance(fn, ast.FunctionDef)
        env = {a.arg: v for a, v in zip(fn.args.args, args, strict=False)}
        try:
            self.run(fn.body, env, d.module, None, None)
        except Return as r:
            return r.value
        return None

    def run(
        self,
        body: list[ast.stmt],
        env: dict[str, Any],
        module: str,
        cls: Def | None,
        owner: Def | None,
    ) -> None:
        for stmt in body:
            self.stmt(stmt, env, module, cls, owner)

    def stmt(
        self, s: ast.stmt, env: dict[str, Any], module: str, cls: Def | None, owner: Def | None
    ) -> None:
        def ev(e: ast.expr) -> Any:
            return self.eval(e, env, module, cls, owner)

        if isinstance(s, ast.Assign):
            value = ev(s.value)
            for t in s.targets:
                self.assign(t, value, env, module, cls, owner)
        elif isinstance(s, ast.AnnAssign) and s.value is not None:
            self.assign(s.target, ev(s.value), env, module, cls, owner)
        elif isinstance(s, ast.Delete):
            for t in s.targets:
                if isinstance(t, ast.Subscript):
                    container, key = ev(t.value), ev(t.slice)
                    if isinstance(container, dict):
                        container.pop(key, None)
        elif isinstance(s, ast.Expr):
            ev(s.value)
        elif isinstance(s, ast.Return):
            raise Return(ev(s.value) if s.value is not None else None)
        elif isinstance(s, ast.If):
            test = ev(s.test)
            if isinstance(test, Unknown):
                self.run(s.body, env, module, cls, owner)
                self.run(s.orelse, env, module, cls, owner)
            else:
                self.run(s.body if test else s.orelse, env, module, cls, owner)
        elif isinstance(s, ast.For):
            items = ev(s.iter)
            if isinstance(items, list | tuple):
                for item in items:
                    self.assign(s.target, item, env, module, cls, owner)
                    self.run(s.body, env, module, cls, owner)
            else:
                self.unknown.append(f"for over {ast.unparse(s.iter)}")
        elif isinstance(s, (ast.With, ast.Try)):
            self.run(s.body, env, module, cls, owner)

    def assign(
        self,
        t: ast.expr,
        value: Any,
        env: dict[str, Any],
        module: str,
        cls: Def | None,
        owner: Def | None,
    ) -> None:
        if isinstance(t, ast.Name):
            env[t.id] = value
        elif (
            isinstance(t, ast.Tuple)
            and isinstance(value, list | tuple)
            and len(value) == len(t.elts)
        ):
            for sub, v in zip(t.elts, value, strict=True):
                self.assign(sub, v, env, module, cls, owner)
        elif isinstance(t, ast.Tuple):
            for sub in t.elts:
                self.assign(sub, Unknown(ast.unparse(sub)), env, module, cls, owner)
        elif isinstance(t, ast.Subscript):
            container = self.eval(t.value, env, module, cls, owner)
            key = self.eval(t.slice, env, module, cls, owner)
            if isinstance(container, dict) and not isinstance(key, Unknown):
                container[key] = value

    def eval(
        self,
        e: ast.expr,
        env: dict[str, Any],
        module: str,
        cls: Def | None,
        owner: Def | None = None,
    ) -> Any:
        def ev(x: ast.expr) -> Any:
            return self.eval(x, env, module, cls, owner)

        if isinstance(e, ast.Constant):
            return e.value
        if isinstance(e, ast.List | ast.Tuple):
            out: list[Any] = []
            for elt in e.elts:
                if isinstance(elt, ast.Starred):
                    inner = ev(elt.value)
                    if isinstance(inner, list | tuple):
                        out += inner
                else:
                    out.append(ev(elt))
            return out
        if isinstance(e, ast.Dict):
            d: dict[Any, Any] = {}
            for k, v in zip(e.keys, e.values, strict=True):
                if k is None:
                    inner = ev(v)
                    if isinstance(inner, dict):
                        d.update(copy.deepcopy(inner))
                else:
                    d[ev(k)] = ev(v)
            return d
        if isinstance(e, ast.JoinedStr):
            parts = []
            for v in e.values:
                x = ev(v.value) if isinstance(v, ast.FormattedValue) else ev(v)
                if not isinstance(x, str):
                    return Unknown(ast.unparse(e))
                parts.append(x)
            return "".join(parts)
        if isinstance(e, ast.Name):
            if e.id in env:
                return env[e.id]
            if e.id in ("True", "False", "None"):
                return {"True": True, "False": False, "None": None}[e.id]
            if e.id in _BUILTIN_TYPES:
                return TypeRef(e.id)
            found = self.wheel.resolve(module, e.id)
            if found is not None and found.kind == "class":
                return ClassRef(found)
            if found is not None and found.kind == "value" and isinstance(found.node, ast.expr):
                v = _literal(found.node)
                return v if not isinstance(v, Unknown) else TypeRef(e.id)
            return TypeRef(e.id)
        if isinstance(e, ast.Attribute):
            base = ev(e.value)
            if isinstance(base, ClassRef):
                # a class attribute: a dataclass field's default (EngineArgs.x = ModelConfig.x)
                fields = class_fields(self.wheel, base.d)
                if e.attr in fields:
                    mod, _, value = fields[e.attr]
                    return _field_default(self.wheel, mod, value)
                return TypeRef(f"{ast.unparse(e)}")
            return TypeRef(ast.unparse(e))
        if isinstance(e, ast.Subscript):
            container, key = ev(e.value), ev(e.slice)
            if isinstance(container, dict) and not isinstance(key, Unknown) and key in container:
                return container[key]
            if isinstance(container, list) and isinstance(key, int):
                return container[key]
            return Unknown(ast.unparse(e))
        if isinstance(e, ast.BinOp) and isinstance(e.op, ast.Add):
            a, b = ev(e.left), ev(e.right)
            if isinstance(a, list) and isinstance(b, list):
                return a + b
            if isinstance(a, str) and isinstance(b, str):
                return a + b
            return Unknown(ast.unparse(e))
        if isinstance(e, ast.Compare) and len(e.ops) == 1:
            a, b = ev(e.left), ev(e.comparators[0])
            if isinstance(a, Unknown) or isinstance(b, Unknown):
                return Unknown(ast.unparse(e))
            op = e.ops[0]
            try:
                if isinstance(op, ast.In):
                    return a in b
                if isinstance(op, ast.NotIn):
                    return a not in b
                if isinstance(op, ast.Eq):
                    return bool(a == b)
                if isinstance(op, ast.NotEq):
                    return bool(a != b)
            except TypeError:
                return Unknown(ast.unparse(e))
            return Unknown(ast.unparse(e))
        if isinstance(e, ast.UnaryOp) and isinstance(e.op, ast.Not):
            v = ev(e.operand)
            return Unknown(ast.unparse(e)) if isinstance(v, Unknown) else not v
        if isinstance(e, ast.BoolOp):
            vals = [ev(v) for v in e.values]
            if any(isinstance(v, Unknown) for v in vals):
                return Unknown(ast.unparse(e))
            return all(vals) if isinstance(e.op, ast.And) else any(vals)
        if isinstance(e, ast.Call):
            return self.call(e, env, module, cls, owner)
        return Unknown(ast.unparse(e))

    def call(
        self, e: ast.Call, env: dict[str, Any], module: str, cls: Def | None, owner: Def | None
    ) -> Any:
        def ev(x: ast.expr) -> Any:
            return self.eval(x, env, module, cls, owner)

        f = e.func
        args = [ev(a) for a in e.args if not isinstance(a, ast.Starred)]
        if isinstance(f, ast.Attribute):
            if f.attr == "add_argument":
                self.add_argument(e, env, module, cls, owner)
                return None
            if f.attr == "add_argument_group" or f.attr == "add_mutually_exclusive_group":
                return ParserRef()
            if (
                isinstance(f.value, ast.Call)
                and ast.unparse(f.value.func) == "super"
                and owner is not None
            ):
                assert isinstance(owner.node, ast.ClassDef)
                for base in class_bases(self.wheel, owner)[1:]:
                    if find_method(self.wheel, base, f.attr) is not None:
                        return self.call_method(base, f.attr, args, cls)
                return Unknown(ast.unparse(e))
            target = ev(f.value)
            if isinstance(target, ClassRef):
                if f.attr.endswith("add_cli_args") or f.attr.startswith("_customize"):
                    return self.call_method(target.d, f.attr, args)
                return Unknown(ast.unparse(e))
            if isinstance(target, dict):
                if f.attr == "items":
                    return [[k, v] for k, v in target.items()]
                if f.attr == "keys":
                    return list(target)
                if f.attr == "values":
                    return list(target.values())
                if f.attr == "pop":
                    return target.pop(args[0], *args[1:2])
                if f.attr == "get":
                    return target.get(args[0], *args[1:2])
                if f.attr == "update" and args and isinstance(args[0], dict):
                    target.update(args[0])
                    return None
                if f.attr == "copy":
                    return dict(target)
            if (
                isinstance(target, str)
                and f.attr
                in (
                    "replace",
                    "lower",
                    "upper",
                    "strip",
                    "format",
                )
                and all(isinstance(a, str) for a in args)
            ):
                return str(getattr(target, f.attr)(*args))
            if isinstance(target, list) and f.attr in ("append", "extend") and args:
                if f.attr == "append":
                    target.append(args[0])
                elif isinstance(args[0], list):
                    target.extend(args[0])
                return None
            if isinstance(target, TypeRef) and target.name == "copy" and f.attr == "deepcopy":
                return copy.deepcopy(args[0])
        name = ast.unparse(f)
        if name.split(".")[-1] == "get_kwargs" and args and isinstance(args[0], ClassRef):
            return get_kwargs(self.wheel, args[0].d)
        if (
            name in ("list", "sorted", "tuple")
            and args
            and isinstance(args[0], list | tuple | dict)
        ):
            return sorted(args[0]) if name == "sorted" else list(args[0])
        if name in ("parse_type", "optional_type") and args and isinstance(args[0], TypeRef):
            return TypeRef(args[0].name)
        found = (
            self.wheel.resolve_expr(module, f) if isinstance(f, ast.Name | ast.Attribute) else None
        )
        if (
            found is not None
            and found.kind == "function"
            and name.split(".")[-1] in ("make_arg_parser",)
        ):
            return self.call_function(found, args)
        if any(isinstance(a, ParserRef) for a in args) and name not in _PLATFORM_HOOKS:
            self.unknown.append(f"call with the parser not followed: {name}")
        return Unknown(ast.unparse(e))

    def add_argument(
        self, e: ast.Call, env: dict[str, Any], module: str, cls: Def | None, owner: Def | None
    ) -> None:
        names: list[str] = []
        for a in e.args:
            if isinstance(a, ast.Starred):
                v = self.eval(a.value, env, module, cls, owner)
                names += [x for x in v if isinstance(x, str)] if isinstance(v, list) else []
            else:
                v = self.eval(a, env, module, cls, owner)
                if isinstance(v, str):
                    names.append(v)
                else:
                    self.unknown.append(f"flag name {ast.unparse(a)}")
        kwargs: dict[str, Any] = {}
        for kw in e.keywords:
            v = self.eval(kw.value, env, module, cls, owner)
            if kw.arg is None:
                if isinstance(v, dict):
                    kwargs.update(copy.deepcopy(v))
                else:
                    self.unknown.append(f"**{ast.unparse(kw.value)} for {names}")
            else:
                kwargs[kw.arg] = v
        if names:
            self.flags.append(Flag(names, kwargs))


# --- normalising into the contract ---------------------------------------------------------------

_TYPE_NAMES = {
    "int": "int",
    "float": "float",
    "str": "str",
    "json": "json",
    "json_or_str": "json_or_str",
    "json.loads": "json",
    "union_dict_and_str": "json_or_str",
    "human_readable_int": "human_int",
    "human_readable_int_or_auto": "human_int_or_auto",
    "parse_dataclass": "json",
}


def _jsonable(v: Any) -> Any:
    if isinstance(v, Unknown):
        return {"expr": v.src}
    if isinstance(v, TypeRef):
        return {"expr": v.name}
    if isinstance(v, ClassRef):
        return {"expr": v.d.module}
    if isinstance(v, list | tuple):
        return [_jsonable(x) for x in v]
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, float) and v != v:
        return {"expr": "nan"}
    return v


def flag_entry(flag: Flag) -> dict[str, Any]:
    kw = flag.kwargs
    action = kw.get("action")
    action_name = action.name if isinstance(action, TypeRef) else action
    entry: dict[str, Any] = {}
    if action_name in ("store_true", "store_false"):
        entry["type"] = "flag"
    elif isinstance(action_name, str) and action_name.split(".")[-1] == "BooleanOptionalAction":
        entry["type"] = "bool"
    else:
        t = kw.get("type")
        if t is None:
            entry["type"] = "str"
        elif isinstance(t, TypeRef):
            entry["type"] = _TYPE_NAMES.get(t.name, t.name)
        else:  # a lambda that normalises a string (e.g. lower-cases it) before `choices`
            entry["type"] = "str"
            entry["converter"] = _jsonable(t)["expr"]
    choices = kw.get("choices")
    entry["choices"] = (
        _jsonable(list(choices))
        if isinstance(choices, list | tuple)
        else (None if choices is None else _jsonable(choices))
    )
    entry["default"] = _jsonable(kw.get("default"))
    if "nargs" in kw:
        entry["nargs"] = _jsonable(kw["nargs"])
    if action_name == "append" or (
        isinstance(action_name, str)
        and action_name not in ("store_true", "store_false")
        and action_name.split(".")[-1] != "BooleanOptionalAction"
    ):
        entry["action"] = action_name
    if kw.get("nullable"):
        entry["nullable"] = True
    long_names = [n for n in flag.names if n.startswith("--")]
    primary = long_names[0] if long_names else flag.names[0]
    aliases = [n for n in flag.names if n != primary]
    if aliases:
        entry["aliases"] = aliases
    if kw.get("deprecated") is True:
        entry["deprecated"] = True
    return {"name": primary, **entry}


def serve_cli(wheel: Wheel) -> dict[str, Any]:
    """`vllm serve`'s parser: make_arg_parser in the OpenAI entrypoint's cli_args module."""
    for module in ("vllm.entrypoints.openai.cli_args", "vllm.entrypoints.common.cli_args"):
        if not wheel.has_module(module):
            continue
        found = wheel.resolve(module, "make_arg_parser")
        if found is not None and found.module == module:
            break
    else:
        raise SystemExit("make_arg_parser not found in the wheel")
    interp = Interpreter(wheel)
    interp.call_function(found, [ParserRef()])
    flags: dict[str, Any] = {}
    positional: list[dict[str, Any]] = []
    for flag in interp.flags:
        entry = flag_entry(flag)
        name = entry.pop("name")
        if not name.startswith("-"):
            positional.append({"name": name, **entry})
        else:
            flags[name] = (
                entry  # a later add_argument of the same name wins, like argparse's resolve
            )
    if interp.unknown:
        raise SystemExit(
            "cannot follow vLLM's parser construction:\n  " + "\n  ".join(interp.unknown)
        )
    return {
        "positional": positional,
        "flags": dict(sorted(flags.items())),
    }
