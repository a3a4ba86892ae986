"""What a model folder holds and the error a model that cannot be used raises, apart from the loader: the page
and the Hub resolver name them without importing torch (which :mod:`flowerdemo.core.artifact` needs to read a
model), so importing the app serves its first page before torch loads."""

MODEL_FILE = "model.pt"
METADATA_FILE = "flowerdemo.json"


class ModelLoadError(RuntimeError):
    """A model file is missing, not TorchScript, or its metadata is missing or inconsistent."""
