"""privcomp.store (see DESIGN.md layers)."""
