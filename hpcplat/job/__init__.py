"""Code that runs INSIDE a job, on a compute node: who this task is (:mod:`~hpcplat.job.environment`),
the launcher (:mod:`~hpcplat.job.launch`), checkpoints (:mod:`~hpcplat.job.checkpoint`), DDP helpers
(:mod:`~hpcplat.job.distributed`) and the tracking SDK (:mod:`~hpcplat.job.track`).

It must stay cheap to import on a compute node: nothing here imports the catalog (SQLAlchemy),
click, Jinja or SSH at import time, and torch only inside the functions that need it
(``tests/unit/test_job_imports.py`` checks). Users import the public names ``hpcplat.checkpoint``,
``hpcplat.track``, ``hpcplat.distributed`` and ``python -m hpcplat.launch``.
"""
