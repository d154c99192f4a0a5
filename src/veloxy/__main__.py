"""`python -m veloxy` is the `veloxy` command."""

from veloxy.cli import main

raise SystemExit(main())
