"""``python -m bench``: every figure of the performance table (see ``bench/all.py``)."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from all import main  # noqa: E402

main()
