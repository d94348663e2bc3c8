"""The nested lab: an L1 lab host under TCG with real KVM inside (`l1`), and a whole suite run
inside it (`run`)."""
