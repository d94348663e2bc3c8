"""The lab host itself: which accelerator guests get, KVM's paging mode (switched and
restored), measurement conditions (THP, hugepages, governor), and the facts a manifest
records (host facts, tool versions, the project's revision)."""
