"""A workdir belongs to one run: a lock while a run is live, and the run's identity, which a
resume must match.

- `WORKDIR/.lock` names the process holding the workdir (pid, host, start). A second run fails at
  once, naming it. The holder touches the file every `HEARTBEAT_S`; a lock whose process is gone
  (same host) or whose heartbeat stopped `STALE_S` ago (any host) is taken over, with a message.
- `WORKDIR/run.json` holds what the run's checkpoints are a function of: the base checkpoint (by
  content, `files.fingerprint`), the model's shapes, the mode and LoRA settings, the data recipe,
  and the data files (sha256). A resume under another identity is an error naming what changed,
  unless `config.allow_resume_changes` is set.
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import threading
import time

from vlguard_jax import storage
from vlguard_jax.checkpoints.ref import CheckpointRef
from vlguard_jax.checkpoints.runs import RUN_IDENTITY
from vlguard_jax.errors import ConfigError, UserError
from vlguard_jax.storage.files import atomic_write_json, sha256_file
from vlguard_jax.train.config import RunConfig
from vlguard_jax.train.validate import SOURCES

LOCK = ".lock"
RUN = RUN_IDENTITY
HEARTBEAT_S = 30.0
STALE_S = 300.0
SETTLE_S = 2.0


class WorkdirBusy(UserError):
    pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Lock:
    """`with Lock(workdir, log):` holds the workdir for this process. In object storage, which has
    no exclusive create, the lock is written, then read back after `SETTLE_S`: of two runs
    starting at once, only the last writer finds its own lock."""

    def __init__(self, workdir, log=print):
        self.remote = storage.is_remote(workdir)
        self.path, self.log = storage.as_path(workdir) / LOCK, log
        self._stop = threading.Event()

    def _stale(self, holder: dict) -> bool:
        if holder.get("host") == socket.gethostname() and isinstance(holder.get("pid"), int):
            return not _alive(holder["pid"])
        if self.remote:
            return time.time() - float(holder.get("beat", 0)) > STALE_S
        try:
            age = time.time() - self.path.stat().st_mtime
        except FileNotFoundError:
            return True
        return age > STALE_S

    def _create(self, me: dict) -> bool:
        """Write the lock if there is none; False if there is one."""
        if self.remote:
            if self.path.exists():
                return False
            self.path.write_text(json.dumps(me))
            time.sleep(SETTLE_S)
            return self._holder() == me
        try:
            fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            return False
        with os.fdopen(fd, "w") as f:
            json.dump(me, f)
        return True

    def _holder(self) -> dict:
        try:
            return json.loads(self.path.read_text() or "{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def __enter__(self) -> Lock:
        me = {
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "started": time.strftime("%Y-%m-%d %H:%M:%S"),
            "beat": time.time(),
        }
        for _ in range(3):
            if not self._create(me):
                holder = self._holder()
                if not self._stale(holder):
                    raise WorkdirBusy(
                        f"{self.path.parent}: in use by process {holder.get('pid')} on {holder.get('host')} since "
                        f"{holder.get('started')} ({self.path}); wait for that run, or delete the lock file if it "
                        "is gone"
                    ) from None
                self.log(
                    f"{self.path}: taking over the stale lock of process {holder.get('pid')} on {holder.get('host')}"
                )
                self.path.unlink(missing_ok=True)
                continue
            self._me = me
            threading.Thread(target=self._beat, daemon=True).start()
            return self
        raise WorkdirBusy(f"{self.path}: could not take the lock")

    def _beat(self) -> None:
        while not self._stop.wait(HEARTBEAT_S):
            try:
                if self.remote:
                    self._me = dict(self._me, beat=time.time())
                    self.path.write_text(json.dumps(self._me))
                else:
                    os.utime(self.path)
            except FileNotFoundError:
                return

    def __exit__(self, *exc) -> None:
        self._stop.set()
        try:
            if self._holder() == self._me:
                self.path.unlink()
        except OSError:
            pass


def identity(cfg: RunConfig, base: CheckpointRef) -> dict:
    """What the run's checkpoints are a function of (see the module doc)."""
    d = cfg.data
    lora = dataclasses.asdict(cfg.lora)
    return {
        "base_checkpoint": base.fingerprint,
        "model": base.config.to_dict(),
        "mode": cfg.train.mode,
        "lora": {k: (list(v) if isinstance(v, tuple) else v) for k, v in lora.items()}
        if cfg.train.mode == "lora"
        else None,
        "recipe": {
            "recipe": d.recipe,
            "helpful_samples": d.helpful_samples,
            "helpful_seed": d.helpful_seed,
            "convert_seed": d.convert_seed,
            "max_length": d.max_length,
            "template": d.template,
            "pad_image": d.pad_image,
        },
        "data": {source: sha256_file(getattr(d, source)) for source in SOURCES[d.recipe]},
    }


NAMES = {
    "base_checkpoint": "base checkpoint (config.model.checkpoint, by content)",
    "model": "model shapes",
    "mode": "training mode (config.train.mode)",
    "lora": "LoRA settings (config.lora)",
    "recipe": "data recipe (config.data)",
    "data": "data files' contents (config.data.vlguard / llava)",
}


def check_resume(workdir, now: dict, allow: bool, log=print, write: bool = True) -> None:
    """Compare with the identity saved by the run's first start (saved now, by the process that
    `write`s, if there is none). Every process compares, so a refused resume stops them all."""
    path = storage.as_path(workdir) / RUN
    if not path.exists():
        if write:
            atomic_write_json(path, now, indent=1)
        return
    saved = json.loads(path.read_text())
    changed = [NAMES[k] for k in NAMES if saved.get(k) != now.get(k)]
    if not changed:
        return
    if not allow:
        raise ConfigError(
            f"{workdir}: its run was started with another {', '.join(changed)}; resume with the "
            "same settings, use a new workdir, or set config.allow_resume_changes=True"
        )
    log(f"warning: resuming {workdir} with another {', '.join(changed)} (config.allow_resume_changes)")
    if write:
        atomic_write_json(path, now, indent=1)
