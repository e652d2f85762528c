"""The package layering of ``pipelines``, checked over the ``ast`` imports of every module.

Every ``import`` and ``from ... import`` counts, at any depth (inside functions and ``if TYPE_CHECKING:`` blocks
too: a deferred import is still a dependency), with relative imports resolved. Checked:

(a) no import cycle between packages (the first-level subpackages of ``pipelines``; the top-level modules are
    one bottom package, ``<top>``);
(b) a package imports only packages of its own or a lower layer (:data:`LAYERS`);
(c) no stage imports another stage (a stage is a module or package directly under ``pipelines/stages``; its own
    package and the stages' shared helpers :data:`STAGE_HELPERS` are allowed);
(d) no import cycle between the modules of one package.

Each failure names the importing module, the file and line, and the import statement.
"""

from __future__ import annotations

import ast
import textwrap
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from pipelines.features.fraud_graph import strongly_connected

ROOT = "pipelines"
SOURCE = Path(__file__).resolve().parents[1] / ROOT
TOP = "<top>"

# Bottom to top; a package may import its own layer and the layers below. ``predictionlog`` (the prediction log)
# sits directly below ``service`` and ``audit``, which both read or write it; it imports no other package today.
LAYERS: tuple[frozenset[str], ...] = (
    frozenset({TOP, "evaluation"}),
    frozenset({"synth", "fhir", "features"}),
    frozenset({"imaging", "fraud", "pacs"}),
    frozenset({"modeling"}),
    frozenset({"tracking"}),
    frozenset({"predictionlog"}),
    frozenset({"service", "audit"}),
    frozenset({"release"}),
    frozenset({"stages"}),
    frozenset({"cli"}),
)
# Packages of one layer that must not import each other at all (not only not in a cycle).
APART: tuple[frozenset[str], ...] = (frozenset({"service", "audit"}),)
# Modules under pipelines/stages that are not stages: helpers every stage may use.
STAGE_HELPERS = frozenset({"tracked"})


@dataclass(frozen=True)
class Import:
    """One resolved import edge."""

    source: str  # importing module, dotted
    target: str  # imported module (the deepest name that is a module of the tree), dotted
    path: Path
    line: int
    text: str

    def where(self) -> str:
        """``module (file:line): statement``."""
        return f"{self.source} ({self.path}:{self.line}): {self.text}"


def module_name(path: Path, base: Path) -> str:
    """The dotted module name of ``path`` (``__init__.py`` names its package)."""
    parts = list(path.relative_to(base).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _resolve(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module a ``from`` import names (relative imports resolved against ``module``)."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def collect_imports(base: Path, root: str) -> tuple[set[str], list[Import]]:
    """Every module under ``base/root`` and every import of one of them by another.

    Args:
        base: the folder holding the top package.
        root: the top package's name.

    Returns:
        The module names, and the edges whose target lies inside ``root``.
    """
    files = sorted((base / root).rglob("*.py"))
    modules = {module_name(f, base) for f in files}
    edges: list[Import] = []
    for file in files:
        source = module_name(file, base)
        text = file.read_text(encoding="utf-8")
        lines = text.splitlines()
        for node in ast.walk(ast.parse(text, filename=str(file))):
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                named = _resolve(node, source, file.name == "__init__.py")
                # ``from pkg import mod`` imports the module ``pkg.mod``; ``from mod import name`` imports ``mod``.
                targets = [f"{named}.{a.name}" if f"{named}.{a.name}" in modules else named for a in node.names]
            else:
                continue
            statement = " ".join(line.strip() for line in lines[node.lineno - 1 : node.end_lineno])
            for target in dict.fromkeys(targets):
                while target and target not in modules and "." in target:
                    target = target.rsplit(".", 1)[0]  # ``import a.b.c`` of a name inside a module
                if target in modules and target.split(".")[0] == root and target != source:
                    edges.append(Import(source, target, file.relative_to(base), node.lineno, statement))
    return modules, edges


def package_of(module: str, modules: set[str]) -> str:
    """The first-level subpackage of a module, or :data:`TOP` for the top package's own modules."""
    parts = module.split(".")
    if len(parts) == 1:
        return TOP
    first = ".".join(parts[:2])
    return parts[1] if any(m.startswith(first + ".") for m in modules) or len(parts) > 2 else TOP


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one node, each sorted, in order of their smallest node.

    The project's own Tarjan (:func:`pipelines.features.fraud_graph.strongly_connected`, which also finds the
    fraud referral loops) does the search.
    """
    components: dict[str, list[str]] = defaultdict(list)
    for node, (component, size) in strongly_connected((a, b) for a, nxt in graph.items() for b in nxt).items():
        if size > 1:
            components[component].append(node)
    return [sorted(components[c]) for c in sorted(components)]


def _cycle_report(kind: str, cycle: list[str], edges: list[Import], key: Callable[[str], str]) -> str:
    members = set(cycle)
    lines = [f"{kind} import cycle: {' <-> '.join(cycle)}"]
    lines += [
        f"  {e.where()}"
        for e in edges
        if key(e.source) in members and key(e.target) in members and key(e.source) != key(e.target)
    ]
    return "\n".join(lines)


def package_cycles(modules: set[str], edges: list[Import]) -> list[str]:
    """(a): one message per cycle between packages, listing the imports that close it."""
    pkg = lambda m: package_of(m, modules)  # noqa: E731
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        if pkg(e.source) != pkg(e.target):
            graph[pkg(e.source)].add(pkg(e.target))
    return [_cycle_report("package", c, edges, pkg) for c in find_cycles(graph)]


def layer_violations(modules: set[str], edges: list[Import]) -> list[str]:
    """(b): imports of a higher layer, of a package in no layer, or between packages kept apart."""
    rank = {name: i for i, layer in enumerate(LAYERS) for name in layer}
    problems = []
    for e in edges:
        src, dst = package_of(e.source, modules), package_of(e.target, modules)
        if src == dst:
            continue
        if src not in rank or dst not in rank:
            missing = src if src not in rank else dst
            problems.append(f"package {missing!r} is in no layer of LAYERS: {e.where()}")
        elif rank[dst] > rank[src]:
            problems.append(f"{src} (layer {rank[src]}) imports {dst} (layer {rank[dst]}): {e.where()}")
        elif any({src, dst} <= group for group in APART):
            problems.append(f"{src} and {dst} sit side by side and must not import each other: {e.where()}")
    return problems


def stage_violations(edges: list[Import], root: str = ROOT) -> list[str]:
    """(c): a stage importing another stage."""
    prefix = f"{root}.stages."

    def stage(module: str) -> str | None:
        if not module.startswith(prefix):
            return None
        name = module[len(prefix) :].split(".")[0]
        return None if name in STAGE_HELPERS else name

    return [
        f"stage {stage(e.source)!r} imports stage {stage(e.target)!r}: {e.where()}"
        for e in edges
        if stage(e.source) and stage(e.target) and stage(e.source) != stage(e.target)
    ]


def module_cycles(modules: set[str], edges: list[Import]) -> list[str]:
    """(d): cycles between modules of one package."""
    pkg = lambda m: package_of(m, modules)  # noqa: E731
    graph: dict[str, set[str]] = defaultdict(set)
    for e in edges:
        if pkg(e.source) == pkg(e.target):
            graph[e.source].add(e.target)
    return [_cycle_report("module", c, edges, lambda m: m) for c in find_cycles(graph)]


@pytest.fixture(scope="module")
def tree() -> tuple[set[str], list[Import]]:
    return collect_imports(SOURCE.parent, ROOT)


def test_every_package_has_a_layer(tree: tuple[set[str], list[Import]]) -> None:
    modules, _ = tree
    known = set().union(*LAYERS)
    unplaced = sorted({package_of(m, modules) for m in modules} - known)
    assert not unplaced, f"packages in no layer of LAYERS (tests/test_architecture.py): {unplaced}"


def test_no_import_cycle_between_packages(tree: tuple[set[str], list[Import]]) -> None:
    problems = package_cycles(*tree)
    assert not problems, "\n".join(problems)


def test_packages_import_only_their_own_or_lower_layers(tree: tuple[set[str], list[Import]]) -> None:
    problems = layer_violations(*tree)
    assert not problems, "\n".join(problems)


def test_no_stage_imports_another_stage(tree: tuple[set[str], list[Import]]) -> None:
    problems = stage_violations(tree[1])
    assert not problems, "\n".join(problems)


def test_no_import_cycle_between_modules_of_a_package(tree: tuple[set[str], list[Import]]) -> None:
    problems = module_cycles(*tree)
    assert not problems, "\n".join(problems)


def _write(base: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = base / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")


def test_the_checker_reports_what_it_should(tmp_path: Path) -> None:
    """A small fake tree with one of each fault: every check names the module, file, line and statement."""
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/config.py": "X = 1\n",
            "pkg/modeling/__init__.py": "",
            # (d) engine <-> ddp, one side inside a function; (b) modeling imports the higher service layer.
            "pkg/modeling/engine.py": "from . import ddp\nfrom pkg.service import app\n",
            "pkg/modeling/ddp.py": "def run():\n    from pkg.modeling.engine import train\n",
            "pkg/service/__init__.py": "",
            # (a) service -> audit -> service; (b) side by side packages importing each other.
            "pkg/service/app.py": "import pkg.audit.report\nfrom ..config import X\n",
            "pkg/audit/__init__.py": "",
            "pkg/audit/report.py": "from pkg.service.app import create_app\n",
            "pkg/stages/__init__.py": "",
            "pkg/stages/tracked.py": "",
            "pkg/stages/train/__init__.py": "",
            "pkg/stages/train/fraud.py": "from pkg.stages.train import common\nfrom pkg.stages import tracked\n",
            "pkg/stages/train/common.py": "",
            # (c) a stage importing another stage's package.
            "pkg/stages/evaluate.py": "from pkg.stages.train.fraud import run\n",
        },
    )
    modules, edges = collect_imports(tmp_path, "pkg")
    assert "pkg.modeling.engine" in modules and "pkg" in modules

    [cycle] = package_cycles(modules, edges)
    assert cycle.startswith("package import cycle: audit <-> service")
    assert "pkg.service.app (pkg/service/app.py:1): import pkg.audit.report" in cycle
    assert "pkg.audit.report (pkg/audit/report.py:1): from pkg.service.app import create_app" in cycle

    layers = "\n".join(layer_violations(modules, edges))
    assert "modeling (layer 3) imports service (layer 6): pkg.modeling.engine (pkg/modeling/engine.py:2)" in layers
    assert "service and audit sit side by side" in layers

    [stage] = stage_violations(edges, root="pkg")
    assert stage == (
        "stage 'evaluate' imports stage 'train': "
        "pkg.stages.evaluate (pkg/stages/evaluate.py:1): from pkg.stages.train.fraud import run"
    )

    [module_cycle] = module_cycles(modules, edges)
    assert module_cycle.startswith("module import cycle: pkg.modeling.ddp <-> pkg.modeling.engine")
    assert "pkg.modeling.engine (pkg/modeling/engine.py:1): from . import ddp" in module_cycle
    assert "pkg.modeling.ddp (pkg/modeling/ddp.py:2): from pkg.modeling.engine import train" in module_cycle


def test_the_checker_passes_a_clean_tree(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "pkg/__init__.py": "",
            "pkg/io.py": "",
            "pkg/modeling/__init__.py": "",
            "pkg/modeling/engine.py": "from pkg.modeling import distributed\nfrom pkg import io\n",
            "pkg/modeling/distributed.py": "",
            "pkg/modeling/ddp.py": "from .engine import train\n",
        },
    )
    modules, edges = collect_imports(tmp_path, "pkg")
    assert not package_cycles(modules, edges)
    assert not layer_violations(modules, edges)
    assert not module_cycles(modules, edges)
    assert {(e.source, e.target) for e in edges} == {
        ("pkg.modeling.engine", "pkg.modeling.distributed"),
        ("pkg.modeling.engine", "pkg.io"),
        ("pkg.modeling.ddp", "pkg.modeling.engine"),
    }
