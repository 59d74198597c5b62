"""What the process runs on: JAX's distributed start, the preemption notice, and device facts
(the default compute dtype, peak FLOP/s). Layer 0: training, evaluation and the screen use it
without importing one another."""

from __future__ import annotations

import os
import signal
import threading

import jax
from jax.experimental import multihost_utils


class Preemption:
    """SIGTERM is a preemption notice: the run finishes its step, checkpoints it and stops.

    In one process our handler notes the signal. Across processes JAX's preemption service (on
    with `jax.distributed`) catches it on any host and `reached_preemption_sync_point` names the
    same step on all of them, so every process checkpoints that step."""

    def __init__(self):
        self.noticed = False
        self.multi = jax.process_count() > 1
        self._old = None

    def __enter__(self) -> Preemption:
        if not self.multi and threading.current_thread() is threading.main_thread():
            self._old = signal.signal(signal.SIGTERM, self._notice)
        return self

    def _notice(self, signum, frame) -> None:
        self.noticed = True

    def __exit__(self, *exc) -> None:
        if self._old is not None:
            signal.signal(signal.SIGTERM, self._old)

    def at(self, step: int) -> bool:
        """Whether to checkpoint `step` and stop (called after every step by every process)."""
        if self.multi:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.noticed


def maybe_initialize_distributed() -> None:
    """Several processes: `jax.distributed.initialize` from the environment (TPU pods detect it
    themselves; elsewhere JAX_COORDINATOR_ADDRESS, JAX_NUM_PROCESSES, JAX_PROCESS_ID)."""
    addr = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if addr and not jax.distributed.is_initialized():
        # CPU collectives across processes (affects only the CPU backend; must precede init).
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(addr, int(os.environ["JAX_NUM_PROCESSES"]), int(os.environ["JAX_PROCESS_ID"]))
    elif os.environ.get("TPU_WORKER_HOSTNAMES") and not jax.distributed.is_initialized():
        jax.distributed.initialize()


def auto_dtype(backend: str | None = None) -> str:
    """The compute dtype `--dtype auto` means: float16 on a GPU (the authors' choice in LLaVA's
    and VLGuard's evaluation scripts; greedy answers change with the dtype), bfloat16 on a TPU
    (which has no fast float16), float32 on a CPU."""
    backend = backend or jax.default_backend()
    return {"gpu": "float16", "cuda": "float16", "rocm": "float16", "tpu": "bfloat16"}.get(backend, "float32")


# Dense bf16/fp16 peak FLOP/s per device, for MFU; unknown devices report no MFU.
PEAK_FLOPS = {
    "H100": 989e12,
    "H200": 989e12,
    "A100": 312e12,
    "TPU v4": 275e12,
    "TPU v5 lite": 197e12,
    "TPU v5": 459e12,
    "TPU v6 lite": 918e12,
}


def peak_flops(device=None) -> float | None:
    kind = (device or jax.devices()[0]).device_kind
    for name, flops in PEAK_FLOPS.items():
        if name.lower() in kind.lower():
            return flops
    return None
