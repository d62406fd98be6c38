from trade_stream.cli import main

raise SystemExit(main())
