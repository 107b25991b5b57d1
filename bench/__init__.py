"""Benchmarks: run them by hand (`python -m bench.<name>`); they print medians and ratios."""
