"""`raretask lm ...`: the LM lab's commands (registered on the root command in `raretask/cli.py`).

Every command reads a TOML config plus `dotted.key=value` overrides where it takes one; user mistakes raise
`ConfigError`, printed as one line with exit status 2 by `handles_errors`. Heavy imports (OLMo-core, tokenizers)
happen inside the commands so `raretask --help` stays fast.
"""

from __future__ import annotations

import click

from raretask.cli import handles_errors  # noqa: F401  (used by the commands below)


@click.group()
def lm() -> None:
    """The LM lab: OLMo-core pretraining with injected tasks at controlled frequencies."""


# ------------------------------------------------------------------------------------ models, corpus, tokenizers


# ------------------------------------------------------------------------------------------ tasks and injection


# --------------------------------------------------------------------------------------------- train and sweep
