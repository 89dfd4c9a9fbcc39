import sys

from pipelines.console.server import main

sys.exit(main())
