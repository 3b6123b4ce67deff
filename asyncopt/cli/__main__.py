import sys

from asyncopt.cli import main

sys.exit(main())
