"""`python -m lib_todo.bench`: run the benchmark and exit with main's return code."""

import sys

from .cli import main

sys.exit(main())
