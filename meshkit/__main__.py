"""``python -m meshkit ...``."""

import sys

from meshkit.cli.main import main

if __name__ == "__main__":
    sys.exit(main())
