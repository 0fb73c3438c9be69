"""privcomp.services (see DESIGN.md layers)."""
