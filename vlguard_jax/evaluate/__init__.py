"""Safety evaluation: benchmarks, the refusal scorer, FigStep rendering, reports; CLI in `__main__`."""
