"""``python -m optimizer``: the same as the ``optimizer`` console script."""

import sys

from .cli import main

sys.exit(main())
