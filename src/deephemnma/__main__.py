"""``python -m deephemnma`` runs the command line."""

import sys

from deephemnma.cli.main import main

sys.exit(main())
