"""`python -m orchestrator.cli`: the same as the `orchestrate` console script."""

import sys

from orchestrator.cli.entry import main

sys.exit(main())
