"""The presets, shipped inside the package as `raretask.configs` (see pyproject.toml); found by raretask.presets."""
