"""Running trials: the launcher and its worker processes, the objective, training, the data
a worker prepares once, the U-Net store, samplers and pruners, progress."""
