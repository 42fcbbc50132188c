"""``hpcplat.distributed``: the DDP helpers, the public name of :mod:`hpcplat.job.distributed`.

Importing it gives the very module object of ``hpcplat.job.distributed``, so attributes set or patched
through either name are the same ones. Code that runs in a job lives in ``hpcplat/job/``.
"""

import sys

from hpcplat.job import distributed as _impl
from hpcplat.job.distributed import *  # noqa: F403

sys.modules[__name__] = _impl
