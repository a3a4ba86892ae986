"""Fitting the rules a model carries (the exporter's job; the evaluator measures with the same functions):
``gate`` ("not a flower" / unknown species), ``conformal`` (prediction sets). The rules themselves, and applying
them, live in :mod:`flowerdemo.core`."""
