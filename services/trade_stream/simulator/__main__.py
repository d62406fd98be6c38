"""``python -m trade_stream.simulator``: run the standalone simulator."""

from .cli import main

raise SystemExit(main())
