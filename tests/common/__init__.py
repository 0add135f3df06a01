"""Tests of what both families share: registration, CPU instruction sets, threads, stale
state, edge semantics, the README, the benchmarks and the fuzzers."""
