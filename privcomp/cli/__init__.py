"""privcomp.cli (see DESIGN.md layers)."""
