"""The run directory on disk: manifest, the append-only journal, the Parquet tables and
read-only loading (`rundir`), and the ledger of what a run changed on the host (`ledger`).

Never imports guests, libvirt, SSH or QEMU: readers of results need none of them.
"""
