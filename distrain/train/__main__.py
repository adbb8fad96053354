"""``python -m distrain.train``: see :mod:`distrain.train.cli`."""
import sys

from distrain.train.cli import main

sys.exit(main())
