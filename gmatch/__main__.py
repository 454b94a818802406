import sys

from gmatch.cli import main

sys.exit(main())
