"""Sub-commands of the `tempo-fast` command, one module each (see tempo_fast/cli.py)."""
