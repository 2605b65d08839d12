"""``python -m capture``: the same as ``pokesaga``."""

import sys

from capture.entry import main

sys.exit(main())
