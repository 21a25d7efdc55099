"""Same as `scoremix rec check ...` (the logic lives in scoremix_plugin.recordio.convert)."""

import sys

from scoremix_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["rec", "check", *sys.argv[1:]]))
