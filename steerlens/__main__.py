"""`python -m steerlens COMMAND ...`: the `steerlens` command."""

from steerlens.cli import main

raise SystemExit(main())
