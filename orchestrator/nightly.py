"""Deprecated alias: `python -m orchestrator.nightly` is `python -m orchestrator.fleet.nightly`.

Runners provisioned before the stages became packages have a cron wrapper that still names
this module; re-running ansible/nightly.yml replaces it, after which this file can go.
"""

import sys

if __name__ == "__main__":
    from orchestrator.fleet.nightly import main

    sys.exit(main())
