"""privcomp.proto (see DESIGN.md layers)."""
