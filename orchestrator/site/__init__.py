"""The fleet's static site: `orchestrate site ROOT --out DIR` (cli/site.py).

scan (run directories and their fingerprints) -> facts (what the site needs of one run, kept
in the build state) -> fleet (per suite: series, change points, environment changes, each host
x suite's status) -> svg (sparklines, trends) and pages (HTML, summary.json) -> build (only what
changed is written; state.py keeps the fingerprints and the pages' input digests).
"""
