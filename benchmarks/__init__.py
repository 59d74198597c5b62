"""Benchmarks: `python -m benchmarks.train_throughput`, `python -m benchmarks.generate_throughput`,
`python -m benchmarks.conversion`. Results go in BENCHMARKS.md."""
