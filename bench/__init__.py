"""Benchmarks of workhorse against its Python peers; run them with ``bench/run``.

The driver (``bench.main``) starts every worker and producer as a subprocess, so a library
that hangs or crashes is killed and reported without stopping the run. See
docs/benchmarks.md for what is measured and how.
"""
