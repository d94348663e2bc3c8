"""What a trial observed besides its own metrics: perf counts (`perf`), KVM's per-VM stats,
/proc/vmstat deltas, trace-cmd captures and the host+guest timeline."""
