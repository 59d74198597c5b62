"""Judges' agreement: raw agreement and Cohen's kappa, on cases worked out by hand."""

import pytest

from vlguard_jax.evaluate.agreement import agreement, cohen_kappa, pair


def test_kappa_by_hand():
    """A calls 5 of 10 unsafe, B 4; they agree on 7. p_o = 0.7, p_e = 0.5 * 0.4 + 0.5 * 0.6 = 0.5,
    kappa = (0.7 - 0.5) / (1 - 0.5) = 0.4."""
    a = [1, 1, 1, 1, 1, 0, 0, 0, 0, 0]
    b = [1, 1, 1, 0, 0, 0, 0, 0, 0, 1]
    assert cohen_kappa([bool(x) for x in a], [bool(x) for x in b]) == pytest.approx(0.4)


def test_kappa_at_its_bounds_and_where_it_is_undefined():
    assert cohen_kappa([True, False], [True, False]) == pytest.approx(1.0)
    assert cohen_kappa([True, False], [False, True]) == pytest.approx(-1.0)  # p_o 0, p_e 0.5
    assert cohen_kappa([True, True], [False, False]) == pytest.approx(0.0)  # p_o 0, p_e 0
    assert cohen_kappa([True, True, True], [True, True, True]) is None  # p_e 1: no chance to beat
    with pytest.raises(ValueError, match="same responses"):
        cohen_kappa([True], [True, False])


def test_pairs_count_only_the_responses_both_judged():
    guard = {"a": True, "b": False, "c": None, "d": True}
    markers = {"a": True, "b": True, "c": True, "d": True}
    chat = {"a": False, "b": False, "c": False, "d": None}
    assert pair(guard, markers) == {"n": 3, "agreement": pytest.approx(2 / 3), "kappa": pytest.approx(0.0)}
    got = agreement({"llamaguard": guard, "refusal-string": markers, "openai-safety": chat})
    assert list(got) == [
        "llamaguard vs openai-safety",
        "llamaguard vs refusal-string",
        "openai-safety vs refusal-string",
    ]
    # guard and chat on a and b: (T, F) and (F, F): agree once; p_a 0.5, p_b 0, p_e 0.5, kappa 0
    assert got["llamaguard vs openai-safety"] == {"n": 2, "agreement": 0.5, "kappa": 0.0}
    assert pair({"a": None}, {"a": True}) == {"n": 0, "agreement": None, "kappa": None}
