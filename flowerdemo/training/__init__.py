"""What only the trainer needs: datasets, training, export, evaluation, calibration fitting, model card, publish.

The app (``app.py``, :mod:`flowerdemo.ui`, :mod:`flowerdemo.serve.predict`) never imports this subpackage, so a Space
installs ``requirements.txt`` alone and never pays for timm or the training stack (``tests/test_layout.py``).
"""
