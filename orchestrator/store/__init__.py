"""The run directory on disk, one module per job:

- `rundir`: the directory itself: every path in it (`RunDir`) and its manifest, changed only
  through `RunDir.update_manifest`;
- `journal`: the append-only trials.jsonl, its torn-tail repair and its line checks;
- `tables`: trials.parquet and events.parquet, built from the journal;
- `reader`: read-only loading for analysis and pandas (`load`, `list_runs`, `resolve_run`);
- `ledger`: what a run changed on the host, for recovery.

The record types written into the journal live in `orchestrator.model`. Nothing is re-exported
here, so a writer of the ledger or the journal imports no pandas; `orchestrator.results` is the
reading face. Never imports guests, libvirt, SSH or QEMU: readers of results need none of them.
"""
