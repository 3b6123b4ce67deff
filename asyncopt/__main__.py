"""`python -m asyncopt`: the command line, as the `asyncopt` command (spawned workers skip a
package's __main__, so processes fits need no guard here)."""

import sys

from asyncopt.cli import main

if __name__ == "__main__":
    sys.exit(main())
