"""``python -m distrain.bench``: see :mod:`distrain.bench`."""
import sys

from distrain.bench import main

sys.exit(main())
