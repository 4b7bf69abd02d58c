"""``python -m pdesim``: the ``pdesim`` command line (``pdesim.app.cli``)."""

import sys

from pdesim.app.cli import main

sys.exit(main())
