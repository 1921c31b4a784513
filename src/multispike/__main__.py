"""``python -m multispike`` runs the command line (torchrun needs this form)."""

import sys

from multispike.cli import main

sys.exit(main())
