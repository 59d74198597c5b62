"""Tensor names and layouts: our parameter paths <-> PyTorch state-dict names, and the transforms
between their arrays. Each family's converter holds its own table of rules (`Rules`).

Our paths are '/'-joined keys of the Flax parameter tree, e.g.
`language_model/layers_3/self_attn/q_proj/kernel`. Each rule rewrites a path into the PyTorch name
for a layout and says how the tensor is transformed (`linear`: torch [out, in] <-> kernel [in, out];
`patch`: conv weight [D, C, p, p] <-> kernel [C*p*p, D]; `squeeze`: EVA's [1, 1, D] and [1, N, D]
<-> [D] and [N, D]).
"""

from __future__ import annotations

import re
from typing import Any

import numpy as np

Rule = tuple[str, str, str | None]  # (pattern on our path, PyTorch name with {prefix} fields, transform)

# State-dict entries that are buffers, not weights, and are dropped without complaint.
IGNORED = re.compile(r"(position_ids|rotary_emb\.inv_freq)$")


class Rules:
    """A layout's rules, tried in order. A rule's name fills its fields from a prefixes dict: a
    string prefix by its key (`{lm}`), a pair by its key and 1 or 2 (`proj` fills `{proj1}`, `{proj2}`)."""

    def __init__(self, *tables: tuple[Rule, ...]):
        self.compiled = tuple((re.compile(p + "$"), r, t) for table in tables for p, r, t in table)

    def torch_name(self, path: str, prefixes: dict[str, Any]) -> tuple[str, str | None]:
        """(PyTorch name, transform) for one of our parameter paths under the given prefixes."""
        fill = {}
        for key, value in prefixes.items():
            if isinstance(value, tuple):
                fill.update({f"{key}{i + 1}": v for i, v in enumerate(value)})
            else:
                fill[key] = value
        for pattern, repl, transform in self.compiled:
            if pattern.match(path):
                return pattern.sub(repl, path).format(**fill), transform
        raise KeyError(f"no key mapping for parameter {path!r}")


def first(keys, candidates, probe: str) -> Any:
    """The first candidate prefix (or pair, by its first) under which `probe` is a key; else None."""
    for c in candidates:
        if (c[0] if isinstance(c, tuple) else c) + probe in keys:
            return c
    return None


def flax_shape(shape: tuple, transform: str | None) -> tuple:
    """The shape `to_flax` gives a tensor of `shape`, without reading it."""
    if transform == "linear":
        return tuple(reversed(shape))
    if transform == "patch":
        return (int(np.prod(shape[1:])), shape[0])
    if transform == "squeeze":
        return tuple(d for d in shape if d != 1)
    return tuple(shape)


def source_shape(flax: tuple, transform: str | None) -> str:
    """The PyTorch shape that `flax_shape` maps to `flax`, as a message shows it."""
    if transform == "linear":
        return f"{tuple(reversed(flax))} (PyTorch's [out, in] layout)"
    if transform == "patch":
        return f"({flax[1]}, 3, k, k) with 3*k*k = {flax[0]} (PyTorch's conv layout)"
    return str(tuple(flax))


def to_flax(array: np.ndarray, transform: str | None) -> np.ndarray:
    if transform == "linear":
        return array.T
    if transform == "patch":
        return array.reshape(array.shape[0], -1).T
    if transform == "squeeze":  # EVA's cls_token [1, 1, D] and pos_embed [1, N, D]
        return array.reshape(flax_shape(array.shape, transform))
    return array


def to_torch(array: np.ndarray, transform: str | None, patch_shape: tuple | None = None) -> np.ndarray:
    if transform == "linear":
        return array.T
    if transform == "patch":
        return array.T.reshape(patch_shape)
    if transform == "squeeze":
        return array.reshape((1,) * (3 - array.ndim) + array.shape)
    return array
