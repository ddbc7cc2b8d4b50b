"""Figures of the paper drawn from a user's own runs, and the HTML page that gathers them."""
