"""A model family is an adapter (docs/ARCHITECTURE.md, "Adding a family"): outside a family's own
modules and the registry, no module names a family, its config or model class, compares against
one of its templates or parameter parts, or tests `config.vision is None`. A family's modules
carry its name, so the rule is checked by name, beside the import-graph test."""

import ast

import pytest

from tests.test_import_graph import MODULES
from vlguard_jax import families

# Words a family's module carries in its dotted name (a file, or a folder named for it).
FAMILY_WORDS = ("llava", "llama", "text_only", "minigptv2", "eva", "clip", "qwen", "qwen2_5_vl")
REGISTRY = "vlguard_jax.families"  # the module that defines FAMILIES
FRONT_DOORS = {"vlguard_jax.conversion.commands"}  # the converters' subcommands, one per format
# Strings that are a family's word but mean something else where they stand.
OTHER_MEANINGS = {
    "vlguard_jax.data.mixture": {"llava"},  # LLaVA's instruction mix: a data source and a recipe
    "vlguard_jax.train.validate": {"llava"},  # as above: the recipes' sources
    "vlguard_jax.train.state": {"projector"},  # the optimizer group's label, a key in saved optimizer states
}


def family_facts() -> tuple[set[str], set[str]]:
    """(names: each family's constant, config class and model class; strings: each family's name,
    templates and top-level parameter parts), read from the registry."""
    names, strings = set(), set()
    for module in (families.base, *(__import__(m, fromlist=["_"]) for m in MODULES if m.startswith(REGISTRY + "."))):
        names |= {k for k, v in vars(module).items() if isinstance(v, families.Family)}
    for f in families.FAMILIES.values():
        names |= {f.config_class.__name__, f.model_class.__name__}
        strings |= {f.name, *f.templates(), *f.frozen_parts, *f.projectors, *f.decoder}
    return names, strings


def is_family_module(name: str) -> bool:
    """`models/llava.py`, `data/minigptv2_tokens.py`, `conversion/flax_to_minigptv2.py`: a part of
    the name is the word, or starts or ends with it as an underscored word."""
    parts = name.split(".")
    named = any(p == w or p.startswith(w + "_") or p.endswith("_" + w) for p in parts for w in FAMILY_WORDS)
    return named or name == REGISTRY or name.startswith(REGISTRY + ".")


def mentions(source: str, names: set[str], strings: set[str]) -> set[str]:
    """What of a family a module's code names (docstrings and prose are not code)."""
    tree = ast.parse(source)
    docstrings = {
        id(n.body[0].value)
        for n in ast.walk(tree)
        if isinstance(n, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)
        and n.body
        and isinstance(n.body[0], ast.Expr)
        and isinstance(n.body[0].value, ast.Constant)
    }
    found = set()
    for n in ast.walk(tree):
        if isinstance(n, ast.Name) and n.id in names:
            found.add(n.id)
        elif isinstance(n, ast.Attribute) and n.attr in names:
            found.add(n.attr)
        elif isinstance(n, ast.alias) and n.name.rpartition(".")[2] in names:
            found.add(n.name.rpartition(".")[2])
        elif (
            isinstance(n, ast.Constant) and isinstance(n.value, str) and n.value in strings and id(n) not in docstrings
        ):
            found.add(n.value)
        elif isinstance(n, ast.Compare) and isinstance(n.left, ast.Attribute) and n.left.attr == "vision":
            if any(isinstance(o, ast.Is | ast.IsNot) for o in n.ops):
                found.add("vision is None")
    return found


def violations() -> dict[str, set[str]]:
    names, strings = family_facts()
    out = {}
    for name, path in MODULES.items():
        if not name.startswith("vlguard_jax") or is_family_module(name) or name in FRONT_DOORS:
            continue
        if found := mentions(path.read_text(), names, strings) - OTHER_MEANINGS.get(name, set()):
            out[name] = found
    return out


def test_no_core_module_names_a_family():
    assert {m: sorted(found) for m, found in violations().items() if found} == {}


@pytest.mark.parametrize(
    "code, caught",
    [
        ('if template == "minigptv2":\n    pass\n', {"minigptv2"}),
        ("from vlguard_jax.families import LLAVA\nok = family is LLAVA\n", {"LLAVA"}),
        ("ok = isinstance(config, LlavaConfig)\n", {"LlavaConfig"}),
        ("ok = config.vision is None\n", {"vision is None"}),
        ('frozen = params["vision_tower"]\n', {"vision_tower"}),
        ('"""A docstring may say llava_v1."""\nhelp = "asks in llava_v1 by default"\n', set()),
    ],
)
def test_the_check_catches_a_family_in_core_code(code, caught):
    """The checker can fail: each of these lines, added to a core module, is caught."""
    names, strings = family_facts()
    assert mentions(code, names, strings) == caught
