from jaxseg.cli import main

raise SystemExit(main())
