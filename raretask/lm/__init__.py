"""LM lab: OLMo-core pretraining with injected tasks at controlled frequencies."""
