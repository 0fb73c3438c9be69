"""privcomp.client (see DESIGN.md layers)."""
