"""``python -m lrp_fx``: the ``lrp-fx`` command line."""

import sys

from lrp_fx.cli import main

if __name__ == "__main__":
    sys.exit(main())
