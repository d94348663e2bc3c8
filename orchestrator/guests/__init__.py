"""Guests as workload targets: the launcher-neutral guest, libvirt and direct-QEMU launchers,
SSH into them, and the images they boot."""
