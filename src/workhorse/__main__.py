"""``python -m workhorse`` runs the CLI."""

from workhorse.cli import main

main()
