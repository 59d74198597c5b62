"""The layers of the house (docs/ARCHITECTURE.md), checked on the import graph of `vlguard_jax`,
`conversion`, `configs` and `benchmarks`: a module imports only from its own layer or below, there are no cycles, no private
name crosses a module boundary, and imports sit at the top of modules."""

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("vlguard_jax", "conversion", "configs", "benchmarks")
# (module or package, layer); the longest match wins.
LAYERS = {
    "vlguard_jax.errors": 0,
    "vlguard_jax.sharding": 0,
    "vlguard_jax.flags": 0,  # the flags commands share, without jax
    "vlguard_jax.runtime": 0,
    "vlguard_jax.lazy": 0,  # package surfaces read on first use
    "vlguard_jax.storage": 0,  # paths in buckets, atomic writes, orbax in s3://
    "vlguard_jax.models": 1,
    "vlguard_jax.data": 1,
    "vlguard_jax.families": 2,  # the family adapters: each family's config, module, images, prompts, training
    "vlguard_jax.checkpoints": 3,  # converted checkpoints, training runs written and read, loading
    "vlguard_jax.train": 3,
    "vlguard_jax.generate": 3,
    "vlguard_jax.evaluate": 4,
    "vlguard_jax.conversion": 4,
    "conversion": 5,  # thin shims: `python -m conversion.NAME` runs vlguard_jax.conversion.NAME
    "vlguard_jax": 5,  # the package's public surface
    "vlguard_jax.demo": 5,
    "vlguard_jax.data.screen": 5,  # the front door of evaluate.judges.screening
    "configs": 6,  # get_config() files: RunConfig's blocks, read by the train command by path
    "benchmarks": 6,  # the public API, timed
}
# Imports kept inside functions, each for a reason that was measured or is structural.
DEFERRED = {
    # The public surface is read on first use (PEP 562), so a command's --help loads no jax; these
    # imports are for type checkers only.
    ("vlguard_jax", "vlguard_jax.checkpoints.loading"): "type checkers only: the surface loads on first use",
    ("vlguard_jax", "vlguard_jax.models"): "as above",
    ("vlguard_jax", "vlguard_jax.sharding"): "as above",
    ("vlguard_jax.models", "*"): "as above: models' names load on first use",
    ("vlguard_jax.train", "*"): "as above: the training API loads on first use",
    ("vlguard_jax.generate", "*"): "as above: the generation API loads on first use",
    # A front door builds its parser from light modules and imports its library once the flags
    # parse, so --help and a mistyped flag answer at once (tests/test_startup.py).
    ("vlguard_jax.evaluate.__main__", "*"): "the library, after the flags parse",
    ("vlguard_jax.generate.__main__", "*"): "as above",
    ("vlguard_jax.train.__main__", "*"): "as above",
    ("vlguard_jax.demo.__main__", "*"): "as above",
    ("vlguard_jax.data.screen", "*"): "as above",
    ("vlguard_jax.storage.paths", "jax"): "storage is read by every parser; only a remote workdir's mirror needs jax",
    ("vlguard_jax.evaluate.report", "matplotlib"): "pyplot: 0.7 s to import (2-core VM); only write_report draws",
    ("vlguard_jax.evaluate.report", "matplotlib.pyplot"): "as above",
    ("vlguard_jax.conversion.reader", "torch"): "optional: only .bin (pickled) checkpoints need it",
    (
        "vlguard_jax.storage.orbax_s3",
        "orbax.checkpoint._src.path",
    ): "orbax internals: only runs in s3:// depend on them",
    ("vlguard_jax.storage.orbax_s3", "orbax.checkpoint._src.serialization"): "as above",
    (
        "vlguard_jax.storage.paths",
        "botocore.exceptions",
    ): "optional: the [remote] extra's clients, for bucket paths only",
    ("vlguard_jax.storage.paths", "botocore.session"): "as above",
    ("vlguard_jax.storage.paths", "google.auth"): "as above",
    ("vlguard_jax.storage.paths", "google.auth.exceptions"): "as above",
    # The PyTorch peers: torch and peft come with the [test] extra only, and each peer runs in a
    # spawned child (benchmarks.presets.in_child), so ours never shares a process with torch.
    ("benchmarks.presets", "torch"): "optional: the peer's child only",
    ("benchmarks.presets", "transformers"): "the peer's model, built beside torch in its child",
    ("benchmarks.train_throughput", "torch"): "optional: the peer's child only",
    ("benchmarks.train_throughput", "peft"): "optional: the peer's child only",
    ("benchmarks.generate_throughput", "torch"): "optional: the peer's child only",
    ("benchmarks.generate_throughput", "numpy"): "beside torch in the peer",
    ("benchmarks.eval_suite", "torch"): "optional: the peer's child only",
    ("benchmarks.eval_suite", "transformers"): "beside torch in the peer",
    ("benchmarks.eval_suite", "numpy"): "beside torch in the peer",
}


def modules() -> dict[str, Path]:
    out = {}
    for package in PACKAGES:
        for f in (REPO / package).rglob("*.py"):
            name = ".".join(f.relative_to(REPO).with_suffix("").parts)
            out[name.removesuffix(".__init__")] = f
    return out


MODULES = modules()


def layer(name: str) -> int:
    if name.endswith(".__main__"):
        return 5
    best = max((k for k in LAYERS if name == k or name.startswith(k + ".")), key=len)
    return LAYERS[best]


def owner(dotted: str) -> str | None:
    """The project module that `dotted` (a module or a name in one) belongs to."""
    while dotted and dotted not in MODULES:
        dotted = dotted.rpartition(".")[0]
    return dotted or None


def imports(name: str):
    """(imported module, imported name or None, at the top of the module?) for each import."""
    tree = ast.parse(MODULES[name].read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name, None, id(node) in top
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                pkg = name if MODULES[name].name == "__init__.py" else name.rpartition(".")[0]
                for _ in range(node.level - 1):
                    pkg = pkg.rpartition(".")[0]
                base = f"{pkg}.{base}".strip(".")
            for a in node.names:
                full = f"{base}.{a.name}"
                yield (full, None, id(node) in top) if full in MODULES else (base, a.name, id(node) in top)


def edges() -> dict[str, set[str]]:
    out = {}
    for name in MODULES:
        out[name] = {o for target, _, _ in imports(name) if (o := owner(target)) and o != name}
    return out


def test_every_module_imports_only_its_own_layer_or_below():
    wrong = [
        f"{a} (layer {layer(a)}) imports {b} (layer {layer(b)})"
        for a, targets in edges().items()
        for b in sorted(targets)
        if layer(b) > layer(a)
    ]
    assert wrong == []


def test_no_import_cycles():
    graph, seen, cycles = edges(), {}, []

    def visit(node, path):
        seen[node] = "open"
        for nxt in sorted(graph[node]):
            if seen.get(nxt) == "open":
                cycles.append(" -> ".join(path[path.index(nxt) :] + [nxt]))
            elif nxt not in seen:
                visit(nxt, path + [nxt])
        seen[node] = "done"

    for node in sorted(graph):
        if node not in seen:
            visit(node, [node])
    assert cycles == []


def test_no_private_name_crosses_a_module():
    crossing = [
        f"{name} imports {what} from {target}"
        for name in MODULES
        for target, what, _ in imports(name)
        if what and what.startswith("_") and owner(target) and owner(target) != name
    ]
    assert crossing == []


def test_imports_sit_at_the_top_of_modules():
    nested = [
        f"{name}: import {target}{'.' + what if what else ''}"
        for name in MODULES
        for target, what, at_top in imports(name)
        if not at_top and (name, target) not in DEFERRED and (name, "*") not in DEFERRED and target != "__future__"
    ]
    assert nested == []


def test_the_checker_sees_what_it_checks():
    """The graph is the real one: known edges are in it, and the table covers every module."""
    graph = edges()
    assert "vlguard_jax.checkpoints.runs" in graph["vlguard_jax.checkpoints.loading"]
    assert "vlguard_jax.models.llama" in graph["vlguard_jax.models.llava"]
    assert "vlguard_jax.evaluate.runner" in graph["vlguard_jax.evaluate.suite"]
    assert "vlguard_jax.train" in graph["benchmarks.train_throughput"]
    assert "vlguard_jax.train.config" in graph["configs.paper"]
    assert len(MODULES) > 60 and all(isinstance(layer(m), int) for m in MODULES)


def test_the_code_map_names_every_module():
    """docs/ARCHITECTURE.md's code map keeps up with the package: a new module is named there."""
    text = (REPO / "docs" / "ARCHITECTURE.md").read_text()
    leaves = {
        n.rsplit(".", 1)[-1]
        for n, f in MODULES.items()
        if f.stem not in ("__init__", "__main__") and n.split(".")[0] in ("vlguard_jax", "conversion")
    }
    assert "configs/" in text and "benchmarks/" in text
    assert sorted(m for m in leaves if f"{m}.py" not in text and f"{m}/" not in text) == []


def test_public_functions_say_what_they_return():
    """Every public function and method (top level, or on a public class) has a return annotation,
    so pyright checks its callers (pyproject.toml: standard mode)."""
    bare = []
    for name, f in MODULES.items():
        for node in ast.parse(f.read_text()).body:
            if isinstance(node, ast.FunctionDef):
                fns = [node]
            elif isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                fns = [n for n in node.body if isinstance(n, ast.FunctionDef)]
            else:
                continue
            bare += [f"{name}.{fn.name}" for fn in fns if not fn.name.startswith("_") and fn.returns is None]
    assert bare == []
