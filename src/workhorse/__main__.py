"""``python -m workhorse`` runs the CLI."""

from workhorse.cli import main

# Named as the installed command, so that usage lines and shell completion
# ($_WORKHORSE_COMPLETE) are the same either way.
main(prog_name="workhorse")
