"""The frontier: what a checkpoint's safety costs in over-refusal. One row per checkpoint (the runs
of one checkpoint, real-image and control, joined by the checkpoint their summaries record):

- attack success: each attack benchmark's ASR (VLGuard unsafes and safe-unsafes, XSTest's unsafe
  prompts, AdvBench, FigStep, VLSBench, HoliSafe's unsafe types, a custom set's unsafe prompts), from real-image runs;
- over-refusal: each set of safe prompts' refusal rate (XSTest's safe prompts, VLGuard safe-safes,
  MOSSBench, HoliSafe's SSS prompts, a custom set's safe prompts), from every run; a control run's figures are labelled with its
  image (`safe-safes (blank image)`), and a text prompt asked with a white image (`--text-image
  blank`) is labelled so too;
- helpfulness: the safe-safes F1 and win rate, and the helpfulness benchmarks' headlines.

Every rate carries its interval. The two axes of the frontier plot pool the prompts: the ASR over
every attack prompt, the over-refusal over every safe prompt (each prompt counts once, so a large
set weighs more), each with a percentile bootstrap over the pooled prompts (intervals.bootstrap_ci
on the counts the summaries hold).
"""

from __future__ import annotations

import dataclasses

from vlguard_jax.evaluate.intervals import Rate, bootstrap_ci, rate, rate_of
from vlguard_jax.evaluate.safety.safety_sets import BENIGN


@dataclasses.dataclass
class Counted:
    """A rate's figure (`Rate`, percent with interval) and its counts: `hits` of `n` prompts."""

    figure: Rate
    hits: int
    n: int


@dataclasses.dataclass
class FrontierRow:
    """One checkpoint: {label: Counted} per kind, and the pooled ASR and over-refusal (None where
    it has no such prompts)."""

    name: str
    attacks: dict[str, Counted]
    over_refusal: dict[str, Counted]
    helpfulness: dict[str, float]
    asr: Rate | None = None
    refusal: Rate | None = None


def _counted(s: dict, key: str) -> Counted:
    n = int(s["n"])
    return Counted(rate_of(s, key), round(s[key] * n), n)


def _image_of(s: dict) -> str | None:
    """How a run's images were replaced, as a label suffix: its control, a blank text image, or None."""
    protocol = s.get("protocol", {})
    if protocol.get("image_control"):
        return f"{protocol['image_control']} image"
    return "blank image" if protocol.get("text_image") == "blank" else None


def _pooled(parts: list[Counted]) -> Rate | None:
    n = sum(c.n for c in parts)
    if not n:
        return None
    hits = sum(c.hits for c in parts)
    flags = [True] * hits + [False] * (n - hits)
    return rate(hits / n, bootstrap_ci(flags))


def row_of(name: str, summaries: list[dict]) -> FrontierRow:
    """The frontier row of one checkpoint from its runs' summaries."""
    row = FrontierRow(name, {}, {}, {})
    for summary in summaries:
        for key, s in sorted(summary.items()):
            if not isinstance(s, dict) or "/" not in key:
                continue
            if key.startswith("helpfulness/"):
                if s.get("headline") is not None:
                    row.helpfulness[key.split("/", 1)[1]] = float(s["headline"])
                continue
            image = _image_of(s)
            label = key if image is None else f"{key} ({image})"
            if "safe" in s and "unsafe" in s:  # XSTest, a custom set
                row.over_refusal[label] = _counted(s["safe"], "refusal_rate")
                if image is None:
                    row.attacks[label] = _counted(s["unsafe"], "asr")
            elif key.endswith("safe_safes") or key.split("/")[0] in BENIGN:
                row.over_refusal[label] = _counted(s, "refusal_rate")
                if image is None and "helpfulness_f1" in s:
                    row.helpfulness["safe_safes F1"] = 100 * s["helpfulness_f1"]
                if image is None and "win_rate" in s.get("judge", {}):
                    row.helpfulness["safe_safes win rate"] = 100 * s["judge"]["win_rate"]
            elif "asr" in s and image is None:
                row.attacks[label] = _counted(s, "asr")
    row.asr = _pooled(list(row.attacks.values()))
    row.refusal = _pooled(list(row.over_refusal.values()))
    return row


def frontier(summaries: list[dict], names: list[str]) -> list[FrontierRow]:
    """One row per checkpoint, in the order runs are given; runs of one checkpoint (the path their
    summaries record) join, under the first run's name."""
    groups: dict[str, tuple[str, list[dict]]] = {}
    for name, summary in zip(names, summaries):
        checkpoints = {str(s["checkpoint"]) for s in summary.values() if isinstance(s, dict) and "checkpoint" in s}
        key = min(checkpoints) if checkpoints else f"run:{name}"
        groups.setdefault(key, (name, []))[1].append(summary)
    return [row_of(name, runs) for name, runs in groups.values()]


def plot(ax, rows: list[FrontierRow]) -> None:
    """Over-refusal against ASR, one point per checkpoint with its interval bars."""
    for r in rows:
        if r.asr is None or r.refusal is None:
            continue
        xe = [[r.refusal - r.refusal.ci[0]], [r.refusal.ci[1] - r.refusal]] if r.refusal.ci else None
        ye = [[r.asr - r.asr.ci[0]], [r.asr.ci[1] - r.asr]] if r.asr.ci else None
        ax.errorbar([float(r.refusal)], [float(r.asr)], xerr=xe, yerr=ye, fmt="o", capsize=3, label=r.name)
        ax.annotate(r.name, (float(r.refusal), float(r.asr)), fontsize=7, xytext=(4, 4), textcoords="offset points")
    ax.set_xlabel("over-refusal: safe prompts refused (%)", fontsize=8)
    ax.set_ylabel("attack success (%)", fontsize=8)
    ax.set_xlim(-2, 102)
    ax.set_ylim(-2, 102)
    ax.set_title("Frontier (lower left is better)", fontsize=9)
