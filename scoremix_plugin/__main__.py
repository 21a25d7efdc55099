"""``python -m scoremix_plugin`` == ``scoremix`` (so ``torchrun -m scoremix_plugin ...`` works)."""

import sys

from scoremix_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main())
