"""``python -m hpcplat`` is the ``hpcplat`` command."""

import sys

from hpcplat.cli.main import main

sys.exit(main())
