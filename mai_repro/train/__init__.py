"""Training: the loop, checkpoints, goodput accounting, faults and distribution."""
