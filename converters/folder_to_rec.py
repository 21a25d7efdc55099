"""Same as `scoremix rec from-folder ...` (the logic lives in scoremix_plugin.recordio.convert)."""

import sys

from scoremix_plugin.cli import main

if __name__ == "__main__":
    sys.exit(main(["rec", "from-folder", *sys.argv[1:]]))
