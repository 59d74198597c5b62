"""Whether judges agree: for every pair of judges, on the responses both gave a verdict on, the raw
agreement (the share of the same verdicts) and Cohen's kappa (agreement beyond what each judge's
own base rate gives by chance):

    kappa = (p_o - p_e) / (1 - p_e),  p_e = p_a * p_b + (1 - p_a) * (1 - p_b),

with p_a and p_b the shares each judge calls unsafe. Where both judges give one verdict to every
response, p_e is 1 and kappa is undefined (None).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping


def cohen_kappa(a: list[bool], b: list[bool]) -> float | None:
    """Cohen's kappa of two judges' verdicts on the same responses (None: undefined)."""
    n = len(a)
    if n == 0 or n != len(b):
        raise ValueError(f"kappa needs verdicts on the same responses, got {len(a)} and {len(b)}")
    p_o = sum(x == y for x, y in zip(a, b)) / n
    p_a, p_b = sum(a) / n, sum(b) / n
    p_e = p_a * p_b + (1 - p_a) * (1 - p_b)
    return None if p_e == 1 else (p_o - p_e) / (1 - p_e)


def pair(a: Mapping[str, bool | None], b: Mapping[str, bool | None]) -> dict:
    """{"n", "agreement", "kappa"} of two judges' verdicts ({response key: unsafe?}, None where a
    judge gave none) on the responses both judged."""
    keys = [k for k in a if a[k] is not None and b.get(k) is not None]
    if not keys:
        return {"n": 0, "agreement": None, "kappa": None}
    x, y = [bool(a[k]) for k in keys], [bool(b[k]) for k in keys]
    return {"n": len(keys), "agreement": sum(p == q for p, q in zip(x, y)) / len(keys), "kappa": cohen_kappa(x, y)}


def agreement(verdicts: Mapping[str, Mapping[str, bool | None]]) -> dict[str, dict]:
    """{"<judge> vs <judge>": pair(...)} for every pair of judges, names in sorted order."""
    return {f"{a} vs {b}": pair(verdicts[a], verdicts[b]) for a, b in itertools.combinations(sorted(verdicts), 2)}
