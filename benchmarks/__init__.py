"""Benchmarks of tempo_fast, one bench_<thing>.py each; run them with `tempo-fast bench`."""
