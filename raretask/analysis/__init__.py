"""Analyses shared by the synthetic and LM labs: gradient interference, probes."""
