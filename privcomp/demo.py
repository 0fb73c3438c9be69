"""privcomp.demo (see DESIGN.md layers)."""
