"""On-demand benchmarks (not part of the test run): python -m benchmarks.<name>."""
