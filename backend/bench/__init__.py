"""Benchmarks: ``python -m bench`` (default), ``python -m bench scale``, ``python -m bench memory``."""
