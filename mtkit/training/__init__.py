"""Training: the loop, the loss, checkpoints and learning-rate schedules."""
