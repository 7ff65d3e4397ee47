"""``python -m benchmarks [--quick] [--only NAME ...] [--out-dir DIR]``: every benchmark."""

import sys

from benchmarks.run import main

if __name__ == "__main__":
    sys.exit(main())
