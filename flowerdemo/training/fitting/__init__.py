"""Fitting the rules a model carries (the exporter's job; the evaluator measures with the same functions):
``temperature`` (calibration), ``conformal`` (prediction sets), ``verdict_rule`` ("not a flower", unknown species,
too small) on the statistics of ``gate`` (thresholds, logistic regression), all on one ``pool`` of calibration
photos, in the order ``calibrate`` runs them. The rules themselves, and applying them, live in
:mod:`flowerdemo.core`."""
