"""The report's chart: every bar carries its value, so a 0.0 bar (the ASR a safety-tuned model
aims for) is visible as 0.0, and a metric a run lacks is marked n/a rather than drawn as 0."""

from vlguard_jax.evaluate.report import chart


def test_every_bar_is_labelled_with_its_value():
    rows = [
        ({"VLGuard unsafes": 0.0, "AdvBench": 93.1}, {"token F1": 80.0}),
        ({"VLGuard unsafes": 100.0}, {"token F1": 92.75}),
    ]
    fig = chart(["before", "after"], rows, ["VLGuard unsafes", "AdvBench"], ["token F1"])
    safety, helpfulness, _ = fig.axes  # the third: the frontier (tests/evaluate/test_frontier.py)
    assert [t.get_text() for t in safety.texts] == ["0.0", "93.1", "100.0", "n/a"]
    assert [t.get_text() for t in helpfulness.texts] == ["80.0", "92.8"]
    heights = [p.get_height() for p in safety.patches]
    assert heights == [0.0, 93.1, 100.0, 0.0]
