"""Same as `scoremix rec info ...` (the logic lives in scoremix_plugin.recordio.convert)."""

import sys

from scoremix_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["rec", "info", *sys.argv[1:]]))
