"""Benchmarks (``streamrec bench``): not part of the test suite. Needs the ``train`` extra."""
