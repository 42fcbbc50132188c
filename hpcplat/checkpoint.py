"""``hpcplat.checkpoint``: the public name of :mod:`hpcplat.job.checkpoint` (and, for job scripts,
``python -m hpcplat.checkpoint latest|path|done|wait|list|requeue|requeue-if-preempted``).

Importing it gives the package object of ``hpcplat.job.checkpoint``. Its functions live in the
package's modules (``signals``, ``layout``, ``requeue``, ``checkpointer``, ``cli``): patch them there.
"""

import sys

from hpcplat.job import checkpoint as _impl
from hpcplat.job.checkpoint import *  # noqa: F403

if __name__ == "__main__":
    sys.exit(_impl.main())
sys.modules[__name__] = _impl
