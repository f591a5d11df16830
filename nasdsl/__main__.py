import sys

from nasdsl.cli import entry

sys.exit(entry())
