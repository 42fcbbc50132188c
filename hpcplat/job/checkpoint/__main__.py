"""``python -m hpcplat.job.checkpoint`` (the same as ``python -m hpcplat.checkpoint``)."""

import sys

from hpcplat.job.checkpoint.cli import main

sys.exit(main())
