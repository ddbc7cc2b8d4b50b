"""The synthetic lab: mixtures of linear-regression tasks, a shared width-N encoder, online training."""
