"""What every training command (train, export, evaluate, wise) shares on the command line: parse, run, and turn
an error the user can fix into one line on stderr and exit status 2, never a traceback.

``flowerdemo/cli.py`` hands these commands over by module name; nothing here imports it back.
"""
from __future__ import annotations

import argparse
import sys

EXIT_OK, EXIT_USAGE = 0, 2  # the same exit statuses as ``flowerdemo predict``


def run_step(name: str, parser: argparse.ArgumentParser, main, user_errors: tuple, argv=None) -> int:
    """Parse and run one pipeline step (train, export, evaluate, wise); an error the user can fix from the command
    line (``user_errors``) is one line on stderr and exit status 2, never a traceback."""
    args = parser.parse_args(argv)
    try:
        main(args)
    except user_errors as error:
        print(f"{name}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    return EXIT_OK
