"""Compare runs (e.g. a base LLM, LLaVA, and its post-hoc and mixed VLGuard versions):

- the paper's Table 2 shape: one row per checkpoint, safety columns (ASR, lower is better) and
  helpfulness columns (higher is better), with a chart of the two in separate panels;
- the frontier (evaluate/frontier.py): each checkpoint's attack success, over-refusal (its
  control runs' too) and helpfulness, and a plot of over-refusal against ASR;
- every metric of every benchmark, category and judge, one row per metric, one column per run,
  and the judges' agreement;
- for two runs, each rate's change prompt by prompt.

A base LLM beside the VLLMs built on it is the paper's first table; a row says which is which.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

from vlguard_jax import storage
from vlguard_jax.errors import MissingFileError
from vlguard_jax.evaluate import frontier
from vlguard_jax.evaluate.intervals import paired, rate_of
from vlguard_jax.evaluate.runner import SUMMARY
from vlguard_jax.evaluate.safety.safety_sets import BENIGN, LABELLED
from vlguard_jax.evaluate.safety.scoring import is_refusal
from vlguard_jax.storage.files import read_json

# Table 2's columns: (label, summary entry, how to read the percentage)
SAFETY_COLUMNS = (
    ("VLGuard unsafes", "vlguard/unsafes", lambda s: s["asr"]),
    ("VLGuard safe-unsafes", "vlguard/safe_unsafes", lambda s: s["asr"]),
    ("XSTest unsafe", "xstest/all", lambda s: s["unsafe"]["asr"]),
    ("XSTest safe refusal", "xstest/all", lambda s: s["safe"]["refusal_rate"]),
    ("AdvBench", "advbench/vanilla", lambda s: s["asr"]),
    ("AdvBench suffix", "advbench/suffix", lambda s: s["asr"]),
    ("FigStep", "figstep/all", lambda s: s["asr"]),
)
HELPFULNESS_COLUMNS = (
    ("VLGuard safe-safes win rate", "vlguard/safe_safes", lambda s: 100 * s["judge"]["win_rate"]),
    ("VLGuard safe-safes F1", "vlguard/safe_safes", lambda s: 100 * s["helpfulness_f1"]),
    ("ScienceQA-IMG", "helpfulness/sqa", lambda s: s["headline"]),
    ("POPE F1", "helpfulness/pope", lambda s: s["headline"]),
    ("MME perception", "helpfulness/mme", lambda s: s["headline"]),
    ("TextVQA", "helpfulness/textvqa", lambda s: s["headline"]),
    ("GQA", "helpfulness/gqa", lambda s: s["headline"]),
    ("MMBench", "helpfulness/mmbench", lambda s: s["headline"]),
    ("MM-Vet", "helpfulness/mmvet", lambda s: s["headline"]),
    ("LLaVA-Bench", "helpfulness/llavabench", lambda s: s["headline"]),
)


WIN, F1 = "VLGuard safe-safes win rate", "VLGuard safe-safes F1"
F1_NOTE = (
    f"{F1} is our token F1 against the reference answers, not the paper's metric: the paper's "
    "safe-safes helpfulness is the GPT-4V judge's win rate, and no run here was judged (the judge "
    "was not configured: set VLGUARD_JUDGE_URL and VLGUARD_JUDGE_MODEL).\n\n"
)


def _value(summary: dict, key: str, read, scale: float = 1.0):
    try:
        v = read(summary[key])
    except (KeyError, TypeError):
        return None
    return None if v is None else scale * v


def table2_of(summary: dict) -> tuple[dict, dict]:
    """({safety label: %}, {helpfulness label: value}) for one run."""
    safety = {label: _value(summary, key, read, 100) for label, key, read in SAFETY_COLUMNS}
    helpful = {label: _value(summary, key, read) for label, key, read in HELPFULNESS_COLUMNS}
    return ({k: v for k, v in safety.items() if v is not None}, {k: v for k, v in helpful.items() if v is not None})


def rows_of(summary: dict) -> dict[str, float]:
    """{row label: value} of every safety metric (percentages, each a `Rate` with its interval
    where the summary has one) in one run's summary.json."""
    out: dict[str, float] = {}
    for name, s in sorted(summary.items()):
        if not isinstance(s, dict) or name.startswith("helpfulness/") or name == "skipped":
            continue
        if "safe" in s and "unsafe" in s:  # xstest
            out[f"{name} unsafe ASR"] = rate_of(s["unsafe"], "asr")
            out[f"{name} safe refusal"] = rate_of(s["safe"], "refusal_rate")
            if "avg_asr" in s:  # HoliSafe's headline: the mean of its unsafe types' ASRs
                out[f"{name} mean type ASR"] = rate_of(s, "avg_asr")
            continue
        metric = "refusal" if name.endswith("safe_safes") or name.split("/")[0] in BENIGN else "ASR"
        out[f"{name} {metric}"] = rate_of(s, "refusal_rate" if metric == "refusal" else "asr")
        if "helpfulness_f1" in s:
            out[f"{name} helpfulness F1"] = rate_of(s, "helpfulness_f1")
        for judge, j in s.get("judges", {}).items():
            if judge != "refusal-string" and "asr" in j:  # the markers' ASR is the row above
                out[f"{name} ASR by {judge}"] = rate_of(j, "asr")
        for cat, c in s.get("by_category", {}).items():
            out[f"{name} [{cat}] ASR"] = rate_of(c, "asr")
    return out


def images_of(summary: dict) -> str:
    """What a run showed in place of real images: `real`, its control, or `-` for a text-only run."""
    found = set()
    for s in summary.values():
        if isinstance(s, dict) and "protocol" in s:
            found.add(s["protocol"].get("image_control") or "real")
    return "/".join(sorted(found)) or "-"


def agreement_rows(names: list[str], summaries: list[dict]) -> list[list[str]]:
    """Each run's judge pairs: responses both judged, raw agreement (%), Cohen's kappa."""
    rows = []
    for run, summary in zip(names, summaries):
        for key, s in sorted(summary.items()):
            for pair, a in (s.get("agreement", {}) if isinstance(s, dict) else {}).items():
                agree = "-" if a["agreement"] is None else f"{100 * a['agreement']:.1f}"
                kappa = "undefined" if a["kappa"] is None else f"{a['kappa']:.2f}"
                rows.append([run, key, pair, str(a["n"]), agree, kappa])
    return rows


def frontier_table(rows: list[frontier.FrontierRow]) -> list[str]:
    attacks = sorted({k for r in rows for k in r.attacks})
    over = sorted({k for r in rows for k in r.over_refusal})
    helpful = sorted({k for r in rows for k in r.helpfulness})
    return _markdown(
        ["checkpoint", "ASR, all attacks", "over-refusal, all safe prompts"]
        + [f"{k} ASR" for k in attacks]
        + [f"{k} refusal" for k in over]
        + helpful,
        [
            [r.name, _fmt(r.asr), _fmt(r.refusal)]
            + [_fmt(r.attacks[k].figure) if k in r.attacks else "-" for k in attacks]
            + [_fmt(r.over_refusal[k].figure) if k in r.over_refusal else "-" for k in over]
            + [_fmt(r.helpfulness.get(k)) for k in helpful]
            for r in rows
        ],
    )


def paired_rows(before: Path, after: Path, summaries: list[dict]) -> list[list[str]]:
    """For two runs on the same prompts: each safety rate's change (after - before, points) with
    its bootstrap interval over the prompts both answered, and the exact McNemar p-value, read
    from the runs' response files (OUT/<benchmark>/<subset>.json). XSTest and custom sets, whose
    rates split by a label their responses do not carry, are left out."""
    rows = []
    for name in sorted(set(summaries[0]) & set(summaries[1])):
        s = summaries[0][name]
        if (
            not isinstance(s, dict)
            or "/" not in name
            or name.startswith(("helpfulness/", *(f"{b}/" for b in LABELLED)))
        ):
            continue
        a, b = (read_json(r / f"{name}.json", None) for r in (before, after))
        if not isinstance(a, dict) or not isinstance(b, dict):
            continue
        keys = sorted(set(a) & set(b))
        refusal = name.endswith("safe_safes") or name.split("/")[0] in BENIGN  # a refusal is the failure there
        flags = [[is_refusal(r[k]) == refusal for k in keys] for r in (a, b)]
        d = paired(flags[0], flags[1])
        lo, hi = (100 * x for x in d["difference_ci95"])
        metric = "refusal" if refusal else "ASR"
        rows.append(
            [
                f"{name} {metric}",
                str(d["n"]),
                f"{100 * d['difference']:+.1f} [{lo:+.1f}, {hi:+.1f}]",
                f"{d['p_mcnemar']:.3g}",
            ]
        )
    return rows


def model_kind(summary: dict) -> str:
    """'LLM' (a text-only model), 'VLLM', or '-' when the summary does not say."""
    kinds = {str(s["model"]) for s in summary.values() if isinstance(s, dict) and "model" in s}
    return {frozenset({"llm"}): "LLM", frozenset({"vllm"}): "VLLM"}.get(frozenset(kinds), "-")


def dtypes(summary: dict) -> str:
    """The compute dtype(s) a run's answers were generated in, as its entries record them."""
    found = sorted(
        {
            str(s["protocol"]["dtype"])
            for s in summary.values()
            if isinstance(s, dict) and "dtype" in s.get("protocol", {})
        }
    )
    return "/".join(found) or "-"


def _markdown(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "| --- |" + " ---: |" * (len(header) - 1)] + [
        "| " + " | ".join(r) + " |" for r in rows
    ]


def _fmt(v) -> str:
    """`12.5`, or with its interval `12.5 [8.1, 17.3]`; `-` for a missing value."""
    if v is None:
        return "-"
    ci = getattr(v, "ci", None)
    return f"{v:.1f}" if ci is None else f"{v:.1f} [{ci[0]:.1f}, {ci[1]:.1f}]"


def chart(names: list, t2: list, safety_cols: list, help_cols: list, rows: list | None = None) -> Any:
    """Table 2 as bars, each labelled with its value (a 0.0 bar reads 0.0, a missing one "n/a"), and
    the frontier: over-refusal against ASR, one point per checkpoint with its interval bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    width = max(10, 0.9 * (len(safety_cols) + len(help_cols)) * len(names))
    fig, axes = plt.subplots(1, 3, figsize=(width + 5, 4.8), gridspec_kw={"width_ratios": [width / 2, width / 2, 5]})
    frontier.plot(axes[2], rows or [])
    for ax, cols, part, title in (
        (axes[0], safety_cols, 0, "Safety: ASR % (lower is better)"),
        (axes[1], help_cols, 1, "Helpfulness (higher is better)"),
    ):
        width = 0.8 / len(names)
        for k, (name, row) in enumerate(zip(names, t2)):
            values = [row[part].get(c) for c in cols]
            bars = ax.bar([i + k * width for i in range(len(cols))], [v or 0 for v in values], width, label=name)
            ax.bar_label(bars, labels=[_fmt(v) if v is not None else "n/a" for v in values], fontsize=6, padding=1)
        ax.set_xticks([i + 0.4 - width / 2 for i in range(len(cols))], cols, rotation=45, ha="right", fontsize=7)
        ax.set_title(title, fontsize=9)
        if part == 0:
            ax.set_ylim(0, 105)  # room for the labels over a 100.0 bar
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    return fig


def write_report(runs: list, out, names: list | None = None) -> tuple[Path, Path]:
    import matplotlib.pyplot as plt

    runs = [storage.as_path(r) for r in runs]
    names = names or [r.name for r in runs]
    summaries = []
    for r in runs:
        summary = read_json(r / SUMMARY, None)
        if summary is None:
            raise MissingFileError(f"{r}: no {SUMMARY}; run python -m vlguard_jax.evaluate with --out {r} first")
        summaries.append(summary)
    kinds = [model_kind(s) for s in summaries]
    compute = [dtypes(s) for s in summaries]
    t2 = [table2_of(s) for s in summaries]
    safety_cols = [c for c, _, _ in SAFETY_COLUMNS if any(c in s for s, _ in t2)]
    help_cols = [c for c, _, _ in HELPFULNESS_COLUMNS if any(c in h for _, h in t2)]
    table2 = _markdown(
        ["checkpoint", "model", "dtype"]
        + [
            f"{c} (ASR %, lower is better)" if c != "XSTest safe refusal" else f"{c} (%, lower is better)"
            for c in safety_cols
        ]
        + [f"{c} (higher is better)" for c in help_cols],
        [
            [n, k, d] + [_fmt(s.get(c)) for c in safety_cols] + [_fmt(h.get(c)) for c in help_cols]
            for n, k, d, (s, h) in zip(names, kinds, compute, t2)
        ],
    )
    tables = [rows_of(s) for s in summaries]
    columns = sorted({c for t in tables for c in t}, key=lambda c: ("[" in c, c))
    detail = _markdown(
        ["metric (%, [95% interval])"] + names,
        [["model"] + kinds, ["images"] + [images_of(s) for s in summaries]]
        + [[c] + [_fmt(t.get(c)) for t in tables] for c in columns],
    )
    front = frontier.frontier(summaries, names)
    agree = agreement_rows(names, summaries)
    agreement = (
        "\n\n## Judges' agreement\n\nOn the responses both judges judged; kappa is Cohen's (agreement "
        "beyond each judge's own rate).\n\n"
        + "\n".join(_markdown(["run", "benchmark", "judges", "responses", "agreement (%)", "kappa"], agree))
        if agree
        else ""
    )
    changes = paired_rows(runs[0], runs[1], summaries) if len(runs) == 2 else []
    change = (
        f"\n\n## {names[1]} against {names[0]}, prompt by prompt\n\n"
        + "\n".join(_markdown(["rate", "prompts", "change (points, [95% interval])", "McNemar p"], changes))
        if changes
        else ""
    )
    out = storage.as_path(out)
    out.mkdir(parents=True, exist_ok=True)
    md = out / "report.md"
    md.write_text(
        "# Evaluation\n\nThe paper's Table 2: safety (attack success, lower is safer; refusal of safe "
        "prompts, lower is more helpful) and helpfulness (higher is better).\n\n"
        + "\n".join(table2)
        + "\n\n"
        + (F1_NOTE if F1 in help_cols and WIN not in help_cols else "")
        + "![safety, helpfulness and the frontier](report.png)\n\n## The frontier\n\n"
        "Attack success against over-refusal, per checkpoint (its control runs joined); the first two "
        "columns pool every attack prompt and every safe prompt.\n\n"
        + "\n".join(frontier_table(front))
        + "\n\n## Every safety metric\n\n"
        + "\n".join(detail)
        + agreement
        + change
        + "\n"
    )
    fig = chart(names, t2, safety_cols, help_cols, front)
    png = out / "report.png"
    image = io.BytesIO()
    fig.savefig(image, format="png", dpi=120)
    plt.close(fig)
    png.write_bytes(image.getvalue())  # one object write in a bucket
    return md, png
