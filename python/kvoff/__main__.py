import sys

from kvoff.cli import main

sys.exit(main())
