"""`python -m tempo_fast` runs the `tempo-fast` command."""
from tempo_fast.cli import main

raise SystemExit(main())
