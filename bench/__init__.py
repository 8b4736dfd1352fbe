"""Benchmarks of saathii-workers (`make bench`, `make bench-lag`): measurements, never
part of `make test`. Run from the repository root."""
