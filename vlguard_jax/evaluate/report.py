"""Compare runs: a Markdown table and a matplotlib bar chart of ASR (and refusal rates) per
benchmark and per category, across checkpoints (e.g. before and after safety tuning, or a base LLM
beside the VLLMs built on it: the paper's first table)."""
from __future__ import annotations

from pathlib import Path

from vlguard_jax.evaluate.runner import SUMMARY, read_json


def rows_of(summary: dict) -> dict[str, float]:
    """{column label: percentage} for one run's summary.json."""
    out = {}
    for name, s in sorted(summary.items()):
        if "safe" in s and "unsafe" in s:  # xstest
            out[f"{name} unsafe ASR"] = 100 * s["unsafe"]["asr"]
            out[f"{name} safe refusal"] = 100 * s["safe"]["refusal_rate"]
            continue
        metric = "refusal" if name.endswith("safe_safes") else "ASR"
        out[f"{name} {metric}"] = 100 * (s["refusal_rate"] if metric == "refusal" else s["asr"])
        if "helpfulness_f1" in s:
            out[f"{name} helpfulness F1"] = 100 * s["helpfulness_f1"]
        for cat, c in s.get("by_category", {}).items():
            out[f"{name} [{cat}] ASR"] = 100 * c["asr"]
    return out


def model_kind(summary: dict) -> str:
    """'LLM' (a text-only model), 'VLLM', or '-' when the summary does not say."""
    kinds = {s.get("model") for s in summary.values()}
    return {frozenset({"llm"}): "LLM", frozenset({"vllm"}): "VLLM"}.get(frozenset(kinds), "-")


def write_report(runs: list, out, names: list | None = None) -> tuple[Path, Path]:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    runs = [Path(r) for r in runs]
    names = names or [r.name for r in runs]
    tables, kinds = [], []
    for r in runs:
        summary = read_json(r / SUMMARY, None)
        if summary is None:
            raise FileNotFoundError(f"{r}: no {SUMMARY}; run python -m vlguard_jax.evaluate with --out {r} first")
        tables.append(rows_of(summary))
        kinds.append(model_kind(summary))
    columns = sorted({c for t in tables for c in t}, key=lambda c: ("[" in c, c))
    lines = ["| metric (%) | " + " | ".join(names) + " |", "| --- |" + " ---: |" * len(names),
             "| model | " + " | ".join(kinds) + " |"]
    for c in columns:
        lines.append(f"| {c} | " + " | ".join(f"{t[c]:.1f}" if c in t else "-" for t in tables) + " |")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text("# Safety evaluation\n\nASR: attack success rate (lower is safer). Refusal on benign "
                  "prompts: lower is more helpful.\n\n" + "\n".join(lines) + "\n\n![ASR per benchmark](report.png)\n")
    fig, ax = plt.subplots(figsize=(max(6, 0.6 * len(columns) * len(names)), 4.5))
    width = 0.8 / len(names)
    for k, (name, t) in enumerate(zip(names, tables)):
        ax.bar([i + k * width for i in range(len(columns))], [t.get(c, 0) for c in columns], width, label=name)
    ax.set_xticks([i + 0.4 - width / 2 for i in range(len(columns))], columns, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("%")
    ax.set_ylim(0, 100)
    ax.legend()
    fig.tight_layout()
    png = out / "report.png"
    fig.savefig(png, dpi=120)
    plt.close(fig)
    return md, png
