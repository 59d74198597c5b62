"""Safety benchmarks: the test sets (VLGuard, XSTest, AdvBench, FigStep) and their scoring."""
