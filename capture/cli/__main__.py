"""``python -m capture.cli``: the same as ``pokesaga``."""

import sys

from capture.cli import main

sys.exit(main())
