"""``python -m distrain.run``: see :mod:`distrain.run.cli`."""
import sys

from distrain.run.cli import main

sys.exit(main())
