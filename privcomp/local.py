"""privcomp.local (see DESIGN.md layers)."""
