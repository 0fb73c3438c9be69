"""privcomp.policy (see DESIGN.md layers)."""
