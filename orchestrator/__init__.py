"""Orchestrator for experiments on memory virtualization (EPT/NPT vs shadow paging vs native)."""

__version__ = "0.1.0"
