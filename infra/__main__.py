"""`python -m infra` runs the exchange command line."""

import sys

from infra.cli import main

sys.exit(main())
