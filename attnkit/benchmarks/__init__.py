"""Benchmarks: one module per kind, each with ``main(argv)``; run ``attnkit bench KIND``."""
