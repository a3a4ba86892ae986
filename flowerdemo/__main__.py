"""``python -m flowerdemo COMMAND ...`` (see :mod:`flowerdemo.cli`)."""
from .cli import main

if __name__ == "__main__":
    raise SystemExit(main())
