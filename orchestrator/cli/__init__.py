"""The front door: `orchestrate` parses a verb, calls one function, maps errors to exit codes.

`entry` holds the parser and the dispatch; `run` the `run` verb, which composes every stage.
The other verbs' parsers live beside the stage they drive (`analysis.report.add_parser`, ...).
"""

from orchestrator.cli.entry import build_parser, main

__all__ = ["build_parser", "main"]
