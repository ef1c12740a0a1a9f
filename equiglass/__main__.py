from equiglass.cli import main

raise SystemExit(main())
