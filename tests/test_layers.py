"""The project's layers: LAYERS below is the one written statement of which package may import
which. A module imports only modules of its own layer or of layers below it, and the import
graph has no cycle. Every import counts, those inside functions too (a function-level import
still ties the two modules together; it only hides it). Read with ast: no TensorFlow here."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("preprocessing", "models", "studies", "search")

# Lowest first. A module belongs to the layer of the longest prefix that names it; each may
# import its own layer and the layers before it, never one after it.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("preprocessing", ("preprocessing",)),  # data sets, images, cache: no models, no search
    ("models", ("models",)),  # the Keras networks (configurations import without TensorFlow)
    ("studies", ("studies",)),  # search spaces: Params -> TrialConfig
    # the service's own vocabulary: errors, URLs, settings, metrics, the trial record, seeds
    ("core", ("search", "search.errors", "search.urls", "search.quiet", "search.settings", "search.metrics",
              "search.repeats", "search.record", "search.tta", "search.groups_report", "search.plots")),
    ("stores", ("search.stores",)),  # Optuna storage, gRPC proxy, MLflow tracking
    ("serving", ("search.serving",)),  # predictors, model folders, the MLflow model
    ("running", ("search.running",)),  # trials: launch, workers, objective, training
    ("results", ("search.results",)),  # studies read back: evaluation, ensembles, reports
    ("cli", ("search.cli",)),
)


def modules() -> dict[str, Path]:
    out = {}
    for pkg in PACKAGES:
        for path in (ROOT / pkg).rglob("*.py"):
            name = ".".join(path.relative_to(ROOT).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = path
    return out


def imported(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    """The project modules `name` imports anywhere in its file."""
    targets = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
                package = package[:len(package) - (node.level - 1)]
                base = ".".join(package + ([base] if base else []))
            targets += [f"{base}.{a.name}" if f"{base}.{a.name}" in mods else base for a in node.names]
    out = set()
    for target in targets:
        while target and target not in mods:
            target = target.rpartition(".")[0]
        if target and target != name:
            out.add(target)
    return out


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {name: imported(name, path, mods) for name, path in mods.items()}


def layer(name: str) -> int:
    best, rank = -1, None
    for i, (_, prefixes) in enumerate(LAYERS):
        for prefix in prefixes:
            if (name == prefix or name.startswith(prefix + ".")) and len(prefix) > best:
                best, rank = len(prefix), i
    assert rank is not None, f"{name} is in no layer: add it to LAYERS"
    return rank


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, found, counter = {}, {}, [], set(), [], 0
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on.add(root)
        while work:
            v, children = work[-1]
            for w in children:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(g[w]))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    component = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        component.append(w)
                        if w == v:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
    return found


def test_the_import_graph_has_no_cycle():
    assert cycles(graph()) == []


def test_no_module_imports_a_layer_above_its_own():
    upward = sorted(f"{m} ({LAYERS[layer(m)][0]}) imports {t} ({LAYERS[layer(t)][0]})"
                    for m, targets in graph().items() for t in targets if layer(t) > layer(m))
    assert upward == []


def test_the_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_every_module_has_a_layer():
    for name in modules():
        layer(name)
