"""``hpcplat.track``: the tracking SDK, the public name of :mod:`hpcplat.job.track`.

Importing it gives the very module object of ``hpcplat.job.track``, so attributes set or patched
through either name are the same ones. Code that runs in a job lives in ``hpcplat/job/``.
"""

import sys

from hpcplat.job import track as _impl
from hpcplat.job.track import *  # noqa: F403

sys.modules[__name__] = _impl
