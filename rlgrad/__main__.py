"""``python -m rlgrad`` is the ``rlgrad`` command."""

import sys

from rlgrad.cli import main

sys.exit(main())
