"""`python -m coolchic ...`: the `coolchic` command."""

import sys

from coolchic.entry import main

if __name__ == "__main__":
    sys.exit(main())
