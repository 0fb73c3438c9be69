"""``python -m privcomp`` runs the command-line interface."""

from __future__ import annotations

from privcomp.cli.main import main

if __name__ == "__main__":
    main()
