"""`python -m switchboard.router.simulation`: the scenarios of `make simulate`."""

import sys

from switchboard.router.simulation.scenarios import main

sys.exit(main())
