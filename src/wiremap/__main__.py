"""``python -m wiremap`` runs the command line."""

import sys

from wiremap.cli import main

sys.exit(main())
