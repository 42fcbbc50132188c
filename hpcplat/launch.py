"""``hpcplat.launch``: the launcher (``python -m hpcplat.launch -- CMD``), the public name of
:mod:`hpcplat.job.launch`.

Importing it gives the very module object of ``hpcplat.job.launch``, so attributes set or patched
through either name are the same ones. Code that runs in a job lives in ``hpcplat/job/``.
"""

import sys

from hpcplat.job import launch as _impl
from hpcplat.job.launch import *  # noqa: F403

if __name__ == "__main__":
    sys.exit(_impl.main())
sys.modules[__name__] = _impl
