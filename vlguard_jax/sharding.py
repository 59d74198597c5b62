"""Meshes and the one table that maps logical axis names to mesh axes.

Model code names every parameter and activation axis logically (`embed`, `heads`, ...); this module
alone decides which mesh axes (`data`, `fsdp`, `tensor`) those names land on.
"""

from __future__ import annotations

import contextlib
import contextvars
import math
from collections.abc import Iterator, Sequence
from typing import Any

import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

from vlguard_jax.errors import ConfigError
from vlguard_jax.flags import parse_mesh

MESH_AXES = ("data", "fsdp", "tensor")

# logical name -> mesh axis (or axes) it is split over; None means replicated.
LOGICAL_AXIS_RULES: tuple[tuple[str, str | tuple[str, ...] | None], ...] = (
    # activations
    ("batch", ("data", "fsdp")),
    ("length", None),
    ("act_embed", None),
    ("act_heads", "tensor"),
    ("act_kv_heads", "tensor"),
    ("act_mlp", "tensor"),
    ("act_vocab", "tensor"),
    ("cache_length", None),
    # parameters
    ("vocab", "tensor"),
    ("embed", "fsdp"),
    ("heads", "tensor"),
    ("kv_heads", "tensor"),
    ("mlp", "tensor"),
    ("norm", None),
    ("vision_embed", "fsdp"),
    ("vision_heads", "tensor"),
    ("vision_mlp", "tensor"),
    ("vision_patch", None),
    ("vision_positions", None),
    ("lora_rank", None),
    ("layers", None),  # the stacked axis of scanned decoder layers
)

_RULES = dict(LOGICAL_AXIS_RULES)
_current_mesh: contextvars.ContextVar[Mesh | None] = contextvars.ContextVar("mesh", default=None)


def make_mesh(shape: Sequence[int] = (-1, 1, 1), devices=None) -> Mesh:
    """A (data, fsdp, tensor) mesh; one -1 entry takes the remaining devices."""
    devices = list(jax.devices() if devices is None else devices)
    shape = list(shape)
    if len(shape) != 3:
        raise ConfigError(f"mesh shape must have 3 entries (data, fsdp, tensor), got {shape}")
    if shape.count(-1) > 1:
        raise ConfigError(f"mesh shape {shape}: at most one entry may be -1")
    known = math.prod(s for s in shape if s != -1)
    if -1 in shape:
        if len(devices) % known:
            raise ConfigError(f"mesh shape {shape} does not divide {len(devices)} devices")
        shape[shape.index(-1)] = len(devices) // known
    if math.prod(shape) < len(devices) and jax.process_count() == 1:
        devices = devices[: math.prod(shape)]  # e.g. a (1, 1, 1) run on a multi-device host
    if math.prod(shape) != len(devices):
        raise ConfigError(f"mesh shape {shape} needs {math.prod(shape)} devices, have {len(devices)}")
    try:
        arr = mesh_utils.create_device_mesh(shape, devices)
    except Exception:  # arbitrary device sets (e.g. CPU subsets) have no physical topology
        arr = np.asarray(devices).reshape(shape)
    return Mesh(arr, MESH_AXES)


EVAL_FIT = 0.7  # weights over this share of one device's memory are sharded over fsdp


def eval_mesh(spec: str | None, param_bytes: Any = None) -> Mesh | None:
    """The mesh an evaluation runs on, over this host's devices: `spec` "D,F,T" as config.mesh; None
    one device (what the library does unless asked); "auto" every local accelerator, along `data`,
    or along `fsdp` when the weights (`param_bytes()`, called only then) take over EVAL_FIT of one
    device's memory; on a CPU host one device (XLA's CPU devices share its cores). Returns None for
    a mesh of one device."""
    devices = jax.local_devices()
    if spec is None or (spec == "auto" and (jax.default_backend() == "cpu" or len(devices) == 1)):
        return None
    if spec == "auto":
        limit = (devices[0].memory_stats() or {}).get("bytes_limit")
        fits = limit is None or param_bytes is None or param_bytes() <= EVAL_FIT * limit
        shape: tuple[int, ...] = (-1, 1, 1) if fits else (1, -1, 1)
    else:
        shape = parse_mesh(spec)
    mesh = make_mesh(shape, devices)
    return None if mesh.size == 1 else mesh


def mesh_record(mesh: Mesh | None) -> dict[str, int]:
    """What summary.json records of the mesh used: {"data": d, "fsdp": f, "tensor": t}."""
    return {a: (mesh.shape[a] if mesh is not None else 1) for a in MESH_AXES}


def batch_multiple(mesh: Mesh | None) -> int:
    """A batch splits over data x fsdp (LOGICAL_AXIS_RULES' "batch")."""
    return 1 if mesh is None else mesh.shape["data"] * mesh.shape["fsdp"]


def logical_to_spec(
    axes: Sequence[str | None], shape: Sequence[int] | None = None, mesh: Mesh | None = None
) -> PartitionSpec:
    """PartitionSpec for logically named axes. With `shape` and `mesh`, a mesh axis that does not
    divide its dimension (odd head counts, small vocabularies) is dropped: that dim is replicated."""
    used: set[str] = set()
    out = []
    for i, name in enumerate(axes):
        if name is None:
            out.append(None)
            continue
        if name not in _RULES:
            raise KeyError(f"logical axis {name!r} has no rule in LOGICAL_AXIS_RULES")
        target = _RULES[name]
        targets = (target,) if isinstance(target, str) else tuple(target or ())
        keep = []
        for t in targets:
            if t in used:
                continue
            size = mesh.shape[t] if mesh is not None else 1
            if shape is not None and mesh is not None and shape[i] % (math.prod(mesh.shape[k] for k in keep) * size):
                continue
            if mesh is not None and size == 1:
                continue
            keep.append(t)
        used.update(keep)
        out.append(None if not keep else keep[0] if len(keep) == 1 else tuple(keep))
    return PartitionSpec(*out)


@contextlib.contextmanager
def use_mesh(mesh: Mesh | None) -> Iterator[Mesh | None]:
    """Make `constrain` inside model code shard activations over `mesh`."""
    token = _current_mesh.set(mesh)
    try:
        yield mesh
    finally:
        _current_mesh.reset(token)


def current_mesh() -> Mesh | None:
    return _current_mesh.get()


def constrain(x: jax.Array, axes: Sequence[str | None]) -> jax.Array:
    """Sharding hint for an activation; a no-op outside `use_mesh`."""
    mesh = _current_mesh.get()
    if mesh is None or mesh.size == 1:
        return x
    spec = logical_to_spec(axes, x.shape, mesh)
    return jax.lax.with_sharding_constraint(x, NamedSharding(mesh, spec))


def tree_shardings(axes_tree, shapes_tree, mesh: Mesh) -> Any:
    """NamedShardings for a tree of logical axes tuples, given matching shapes."""
    return jax.tree.map(
        lambda axes, s: NamedSharding(mesh, logical_to_spec(axes, s.shape, mesh)),
        axes_tree,
        shapes_tree,
        is_leaf=lambda a: isinstance(a, tuple),
    )
