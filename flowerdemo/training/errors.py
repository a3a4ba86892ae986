"""The exporter's error, raised by every module the export goes through (loading the weights, scripting the
network, fitting the verdict rule, writing the folder): one type, so ``export`` reports each as one line."""
from __future__ import annotations


class ExportError(RuntimeError):
    """The weights or the data cannot make a model folder; the message says what to change."""
