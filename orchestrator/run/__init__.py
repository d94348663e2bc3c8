"""A run from start to end: runner (directory, manifest, status), executor (the ExitStack of
modes, guests and trials), targets and the lab-host backend, the host lock, progress, and
recovery of runs that died (with `gc`)."""
