"""``python -m fuzzylogic check|show|signature FILE``: see :mod:`fuzzylogic.cli`."""
import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
