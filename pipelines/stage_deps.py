"""The code and params each DVC stage depends on, generated from its import closure.

DVC reruns a stage when one of its listed deps changes, so a stage that imports a module it does not list can serve
stale results, and one that lists a whole package reruns for code it never runs. This module computes, for every
stage of ``dvc.yaml`` (and every item of a ``foreach`` stage), the Python files its command imports:

- the full import closure of its stage module (``pipelines/stages/<name>.py``, or ``pipelines/stages/<name>/<item>.py``
  with its package ``__init__``), imports inside functions included and ``if TYPE_CHECKING:`` imports left out
  (they never run), transitively;
- the module-level import closure of the command line (``pipelines/cli``): ``shipa <stage>`` imports it before the
  stage, and its function-level imports belong to the other commands.

Params are listed key by key: every first-level field of the stage's section (``train.fraud.epochs``), less the
fields that only change speed (``speed_only`` in ``pipelines/config.py``) and those another item of a shared section
reads (``only``), plus the sections a stage also reads (``register@fraud`` stores the ``features.fraud`` options).

A ``foreach`` stage keeps one definition: the code both items import is listed in ``do``, and each item's own files
and params go through slots of its ``foreach`` entry (``${item.code.c01}``), since DVC interpolates strings, not
lists. The shorter item repeats its own stage module to fill the slots (DVC hashes a repeated path once more, no
harm done).

``python -m pipelines.stage_deps`` rewrites ``dvc.yaml`` in place (comments kept); ``--check`` only compares and exits
1 naming each stage whose listed deps or params differ from its closure (CI and the test suite run that).
"""

from __future__ import annotations

import argparse
import ast
import functools
import io
import sys
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "pipelines"
CLI_PACKAGE = "pipelines.cli"
CODE_PREFIX = f"{PACKAGE}/"
SLOT_PREFIX = "${item."

# Sections a stage reads besides its own (stage or stage@item -> params paths, with fields left out).
EXTRA_PARAMS: dict[str, tuple[str, ...]] = {"register@fraud": ("features.fraud",)}
EXCLUDED_PARAMS: dict[str, frozenset[str]] = {"register@fraud": frozenset({"features.fraud.split"})}


class StageDepsError(ValueError):
    """dvc.yaml names a stage whose module or params section cannot be found."""


def module_file(name: str, root: Path) -> Path | None:
    """The file of module ``name`` under ``root`` (a package's ``__init__.py``), or None outside the project."""
    base = root.joinpath(*name.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _module_name(path: Path, root: Path) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, root: Path, *, top_level_only: bool = False) -> set[str]:
    """Project modules that ``path`` imports, with every parent package (importing ``a.b.c`` runs ``a.b``).

    Args:
        path: a module file under ``root``.
        root: the folder that holds the ``pipelines`` package.
        top_level_only: only imports that run when the module is imported (not those inside functions).
    """
    stat = path.stat()
    return set(_imported_modules(path, root, top_level_only, stat.st_mtime_ns, stat.st_size))


@functools.lru_cache(maxsize=4096)
def _imported_modules(
    path: Path, root: Path, top_level_only: bool, mtime_ns: int, size: int
) -> frozenset[str]:  # mtime and size key the cache: a file edited since is parsed again
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    name = _module_name(path, root)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in _import_statements(tree, top_level_only=top_level_only):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join([*base, node.module] if node.module else base)
            else:
                target = node.module or ""
            found.add(target)
            # ``from pkg import name`` may import a submodule ``pkg.name``.
            found.update(f"{target}.{alias.name}" for alias in node.names)
    modules: set[str] = set()
    for target in found:
        parts = target.split(".")
        if parts[0] != PACKAGE:
            continue
        for i in range(1, len(parts) + 1):
            prefix = ".".join(parts[:i])
            if module_file(prefix, root) is not None:
                modules.add(prefix)
    return frozenset(modules)


def _import_statements(tree: ast.Module, *, top_level_only: bool) -> Iterable[ast.Import | ast.ImportFrom]:
    """The import statements that can run: at any depth, or only at import time (not inside functions).

    Imports under ``if TYPE_CHECKING:`` never run, so they are never deps (their ``else:`` branch does run).
    """
    todo: list[ast.AST] = list(tree.body)
    while todo:
        node = todo.pop()
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            todo.extend(node.orelse)
        elif not (top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef)):
            todo.extend(ast.iter_child_nodes(node))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_closure(modules: Iterable[str], root: Path, *, top_level_only: bool = False) -> set[str]:
    """Every project module that importing ``modules`` can import, transitively (``modules`` included)."""
    seen: set[str] = set()
    todo = list(modules)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        path = module_file(name, root)
        if path is None:
            raise StageDepsError(f"module {name} not found under {root}")
        seen.add(name)
        for parent in _parents(name):
            todo.append(parent)
        todo.extend(imported_modules(path, root, top_level_only=top_level_only) - seen)
    return seen


def _parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def stage_module(stage: str, item: str | None, root: Path) -> str:
    """The module ``shipa <stage> [item]`` runs: ``pipelines.stages.<stage>[.<item>]``."""
    name = f"{PACKAGE}.stages.{stage}" + (f".{item}" if item else "")
    if module_file(name, root) is None:
        raise StageDepsError(f"dvc.yaml stage {stage}{'@' + item if item else ''}: no module {name}")
    return name


def stage_code(stage: str, item: str | None, root: Path) -> list[str]:
    """The Python files (paths relative to ``root``, sorted) that ``shipa <stage> [item]`` imports."""
    modules = import_closure([stage_module(stage, item, root)], root)
    modules |= import_closure([CLI_PACKAGE], root, top_level_only=True)
    files = (module_file(m, root) for m in modules)
    return sorted(p.relative_to(root).as_posix() for p in files if p is not None)


def stage_params(stage: str, item: str | None) -> list[str]:
    """The params keys (dotted) that ``shipa <stage> [item]`` reads, less speed-only ones."""
    from pipelines.config import section_fields  # only the params side needs pydantic

    full = f"{stage}@{item}" if item else stage
    paths = [f"{stage}.{item}" if item and _has_subsection(stage, item) else stage, *EXTRA_PARAMS.get(full, ())]
    excluded = EXCLUDED_PARAMS.get(full, frozenset())
    keys: list[str] = []
    for path in paths:
        for name, meta in section_fields(path).items():
            key = f"{path}.{name}"
            if meta.speed_only or key in excluded or (meta.only is not None and meta.only != item):
                continue
            keys.append(key)
    return keys


def _has_subsection(stage: str, item: str) -> bool:
    from pipelines.config import section_fields

    try:
        section_fields(f"{stage}.{item}")
    except KeyError:
        return False
    return True


@dataclass(frozen=True)
class StageDeps:
    """What one stage (or foreach item) should list: code files and params keys."""

    code: list[str]
    params: list[str]


def expected(dvc: Mapping[str, Any], root: Path) -> dict[str, StageDeps]:
    """Expected deps of every stage in a parsed ``dvc.yaml``, keyed ``stage`` or ``stage@item``."""
    out: dict[str, StageDeps] = {}
    for stage, spec in dvc["stages"].items():
        items = list(spec["foreach"]) if "foreach" in spec else [None]
        for item in items:
            key = f"{stage}@{item}" if item else stage
            out[key] = StageDeps(stage_code(stage, item, root), stage_params(stage, item))
    return out


def listed(dvc: Mapping[str, Any]) -> dict[str, StageDeps]:
    """The code deps and params each stage lists now (``foreach`` slots resolved per item)."""
    out: dict[str, StageDeps] = {}
    for stage, spec in dvc["stages"].items():
        if "foreach" not in spec:
            out[stage] = StageDeps(_code_entries(spec.get("deps", [])), [str(p) for p in spec.get("params", [])])
            continue
        foreach, do = spec["foreach"], spec["do"]
        for item in foreach:
            slots = foreach[item] if isinstance(foreach, Mapping) else {}

            def resolve(entry: Any, slots: Any = slots) -> str:
                text = str(entry)
                if text.startswith(SLOT_PREFIX) and text.endswith("}"):
                    value: Any = slots
                    for part in text[len(SLOT_PREFIX) : -1].split("."):
                        value = value[part]
                    return str(value)
                return text

            code = _code_entries(resolve(d) for d in do.get("deps", []))
            params = [resolve(p) for p in do.get("params", [])]
            out[f"{stage}@{item}"] = StageDeps(code, sorted(set(params), key=params.index))
    return out


def _code_entries(deps: Iterable[Any]) -> list[str]:
    return sorted({str(d) for d in deps if str(d).startswith(CODE_PREFIX)})


def differences(dvc: Mapping[str, Any], root: Path) -> list[str]:
    """One line per stage whose listed code deps or params differ from what it imports and reads."""
    want, have = expected(dvc, root), listed(dvc)
    lines: list[str] = []
    for key, deps in want.items():
        got = have.get(key, StageDeps([], []))
        for label, w, h in (("code", deps.code, got.code), ("params", deps.params, got.params)):
            missing, extra = sorted(set(w) - set(h)), sorted(set(h) - set(w))
            if missing:
                lines.append(f"dvc.yaml: stage {key} imports/reads but does not list {label}: {', '.join(missing)}")
            if extra:
                lines.append(f"dvc.yaml: stage {key} lists {label} it does not import/read: {', '.join(extra)}")
    return lines


def _yaml() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()
    yaml.indent(mapping=2, sequence=4, offset=2)
    yaml.width = 200
    return yaml


def rewrite(text: str, root: Path) -> str:
    """``dvc.yaml`` text with every stage's code deps and params replaced by the generated ones."""
    from ruamel.yaml.comments import CommentedMap, CommentedSeq

    yaml = _yaml()
    doc = yaml.load(text)
    want = expected(doc, root)
    for stage, spec in doc["stages"].items():
        if "foreach" not in spec:
            deps = want[stage]
            spec["deps"] = _merge(spec.get("deps", []), deps.code, CommentedSeq)
            spec["params"] = CommentedSeq(deps.params)
            continue
        items = list(spec["foreach"])
        per_item = {item: want[f"{stage}@{item}"] for item in items}
        common_code = [p for p in per_item[items[0]].code if all(p in d.code for d in per_item.values())]
        common_params = [k for k in per_item[items[0]].params if all(k in d.params for d in per_item.values())]
        own = {
            item: (
                [p for p in d.code if p not in common_code],
                [k for k in d.params if k not in common_params],
            )
            for item, d in per_item.items()
        }
        n_code = max(len(c) for c, _ in own.values())
        n_params = max(len(p) for _, p in own.values())
        foreach = CommentedMap()
        for item, (code, params) in own.items():
            entry = CommentedMap()
            own_module = stage_code_module(stage, item)
            entry["code"] = CommentedMap((f"c{i:02d}", v) for i, v in enumerate(_pad(code, n_code, own_module)))
            if n_params:
                pad = params[0] if params else common_params[0]
                entry["params"] = CommentedMap((f"p{i:02d}", v) for i, v in enumerate(_pad(params, n_params, pad)))
            foreach[item] = entry
        spec["foreach"] = foreach
        do = spec["do"]
        slots = [f"{SLOT_PREFIX}code.c{i:02d}}}" for i in range(n_code)]
        do["deps"] = _merge(do.get("deps", []), [*common_code, *slots], CommentedSeq)
        do["params"] = CommentedSeq([*common_params, *(f"{SLOT_PREFIX}params.p{i:02d}}}" for i in range(n_params))])
    buf = io.StringIO()
    yaml.dump(doc, buf)
    return buf.getvalue()


def stage_code_module(stage: str, item: str) -> str:
    """The path of a foreach item's own stage module (what pads the shorter item's slots)."""
    return f"{PACKAGE}/stages/{stage}/{item}.py"


def _pad(values: list[str], n: int, fill: str) -> list[str]:
    return [*values, *([fill] * (n - len(values)))]


def _merge(deps: Iterable[Any], code: list[str], seq: Any) -> Any:
    """Data deps as they were (with their comments), then the generated code deps."""
    data = [d for d in deps if not (str(d).startswith(CODE_PREFIX) or str(d).startswith(SLOT_PREFIX + "code."))]
    out = seq(data)
    if hasattr(deps, "ca"):
        for i, d in enumerate(deps):
            if d in data and i in deps.ca.items:
                out.ca.items[data.index(d)] = deps.ca.items[i]
    out.extend(code)
    return out


def main(argv: list[str] | None = None) -> int:
    """``python -m pipelines.stage_deps [--check] [--root DIR]``."""
    parser = argparse.ArgumentParser(prog="python -m pipelines.stage_deps", description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare only; exit 1 naming each stale stage")
    parser.add_argument("--root", type=Path, default=Path("."), help="repository root (holds dvc.yaml, pipelines/)")
    args = parser.parse_args(argv)
    path = args.root / "dvc.yaml"
    text = path.read_text(encoding="utf-8")
    try:
        if args.check:
            problems = differences(_yaml().load(text), args.root)
            for line in problems:
                print(line, file=sys.stderr)
            if problems:
                print("run `make deps` (python -m pipelines.stage_deps) and commit dvc.yaml", file=sys.stderr)
            return 1 if problems else 0
        new = rewrite(text, args.root)
    except StageDepsError as exc:
        print(f"stage_deps: error: {exc}", file=sys.stderr)
        return 2
    if new != text:
        tmp = path.with_suffix(".yaml.tmp")
        tmp.write_text(new, encoding="utf-8")
        tmp.replace(path)
        print(f"{path}: code deps and params regenerated", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
