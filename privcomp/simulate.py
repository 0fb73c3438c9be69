"""privcomp.simulate (see DESIGN.md layers)."""
