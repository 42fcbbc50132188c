"""The submission service: what ``hpcplat submit``, :class:`hpcplat.Executor`, sweeps and
``hpcplat rerun`` all call.

    validate (cluster, datasets) → capture provenance → catalog.record_intent → sbatch
        → catalog.confirm_submission

Nothing is ever half-submitted:

* a spec the cluster would refuse raises :class:`UsageError` before anything is written;
* ``sbatch`` failing marks the recorded run NOT_SUBMITTED (``abandon_intent``) and raises
  :class:`SubmissionError` with Slurm's own words;
* the catalog failing *after* ``sbatch`` cancels the job (``scancel``) and says so; should that fail
  too, a reconciliation record is written (:mod:`hpcplat.catalog.pending`) and the error names it.
  There is never a job the catalog does not know about without a record saying so.
"""

from __future__ import annotations

import logging
import os
import stat
import sys
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from hpcplat import siteconfig
from hpcplat.catalog import pending
from hpcplat.catalog.intent import RunIntent
from hpcplat.errors import HpcplatError, UsageError
from hpcplat.siteconfig import SiteConfig
from hpcplat.siteconfig import load as load_config
from hpcplat.slurm.client import SlurmClient
from hpcplat.spec import JobSpec, SpecError
from hpcplat.submission import secrets as secret_env
from hpcplat.submission.render import ArrayPart, render
from hpcplat.submission.validate import Checked, validate, with_cluster_problems

if TYPE_CHECKING:
    from hpcplat.catalog import Catalog

log = logging.getLogger(__name__)


class SubmissionError(HpcplatError):
    """Slurm refused the job, or the submission could not be completed cleanly (the message says
    exactly what state things were left in)."""


@dataclass(frozen=True)
class Submission:
    run_id: str
    job_id: str
    script: str
    """The script given to sbatch."""
    output_path: str
    """Where the job's stdout and stderr go."""
    job_dir: str
    """``$HPCPLAT_JOB_DIR`` of the job."""
    tracked: bool = True
    """False when no catalog is configured (nothing was recorded)."""


# -- collaborators, opened lazily --------------------------------------------------------------

_catalogs: dict[str, Catalog] = {}


def open_catalog(config: SiteConfig) -> Catalog | None:
    """The catalog named by the configuration (opened once per process), or ``None`` when none is
    configured."""
    url = config.catalog_url
    if not url:
        return None
    held = _catalogs.get(url)
    if held is None:
        # Here, not above: the catalog service imports SQLAlchemy and SQLModel, which a process
        # without a configured catalog (or one that never submits) need not load.
        from hpcplat.catalog import Catalog

        held = Catalog.open(url)
        _catalogs[url] = held
    return held


def capture_provenance(workdir: str) -> dict[str, Any]:
    """What :func:`hpcplat.provenance.capture` records, for the job's working directory; ``{}``
    (with a warning) when provenance capture is not available.

    The code state is captured afresh every time. The list of installed packages (reading every
    distribution's metadata: tens of milliseconds) is kept for the life of the process and read
    again only when a directory on ``sys.path`` changes (a package installed or removed), so a loop
    of submissions does not pay for it each time."""
    try:
        from hpcplat.provenance import capture_code, capture_environment
        from hpcplat.provenance.environment import installed_packages
    except ImportError as exc:
        log.warning("provenance capture unavailable (%s); the run is recorded without it", exc)
        return {}
    signature = _site_signature()
    if _packages.get("signature") != signature:
        _packages["packages"] = installed_packages()
        _packages["signature"] = signature
    return {
        "code": capture_code(workdir).to_dict(),
        "env": capture_environment(os.environ, packages=dict(_packages["packages"])),
    }


_packages: dict[str, Any] = {}
_capture_pool: list[ThreadPoolExecutor] = []


def _start_capture(workdir: str) -> Future[dict[str, Any]]:
    """:func:`capture_provenance` started in a worker thread (one per process, kept)."""
    if not _capture_pool:
        _capture_pool.append(ThreadPoolExecutor(max_workers=4, thread_name_prefix="provenance"))
    return _capture_pool[0].submit(capture_provenance, workdir)


_warned_untracked: list[bool] = []


def _site_signature() -> tuple[tuple[str, int], ...]:
    """The directories packages are found in, with their modification times."""
    out = []
    for entry in sys.path:
        try:
            out.append((entry, os.stat(entry or ".").st_mtime_ns))
        except OSError:
            continue
    return tuple(out)


def current_user() -> str:
    """The user from the kernel's uid (``siteconfig.current_user``), never from ``$USER``."""
    return siteconfig.current_user()


# -- the steps ---------------------------------------------------------------------------------


def resolve_workdir(spec: JobSpec, cwd: str | None = None) -> JobSpec:
    """The spec with an absolute working directory (default: ``cwd`` or the current directory), as
    recorded in the catalog so that a rerun runs where the original did."""
    base = cwd or os.getcwd()
    workdir = os.path.join(base, spec.workdir) if spec.workdir else base
    return spec.replace(workdir=os.path.abspath(workdir))


def ensure_job_root(config: SiteConfig) -> Path:
    """Create this user's job root, private to them, and return it (Slurm does not create the
    directory of a job's output, and fails the job without it).

    The site's ``job_root`` may be shared by every user (mode 1777, like ``/tmp``). Under it each
    user gets ``<job_root>/<user>``, mode 0700: job ids are sequential, so a directory another user
    could create there would let them plant a checkpoint or result file a job of ours then loads.
    A user root that exists must be a real directory owned by this user; one that is not is refused,
    never used.
    """
    shared = config.shared_job_root()
    root = config.job_root_path()
    hint = "set [submission] job_root in the site configuration to a writable shared directory"
    try:
        shared.mkdir(parents=True, exist_ok=True)
        root.mkdir(mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UsageError(
            f"cannot create the job directory root {root}: {exc.strerror or exc}",
            hint=f"{hint}; on a shared root, the admin creates {shared} with mode 1777 (like /tmp)",
        ) from None
    check_private_dir(root, what="job directory root", hint=hint)
    return root


def check_private_dir(path: Path, *, what: str, hint: str) -> None:
    """Refuse ``path`` unless it is a directory (not a link) owned by this user; make it 0700."""
    st = path.lstat()
    uid = os.geteuid()
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"the {what} {path} is not a directory (a link or a file is never used)", hint=hint)
    if st.st_uid != uid:
        raise UsageError(
            f"the {what} {path} belongs to {_user_name(st.st_uid)}, not to you ({_user_name(uid)}); "
            "hpcplat never uses a directory someone else created",
            hint=f"ask its owner or the admin to remove it; or {hint}",
        )
    if stat.S_IMODE(st.st_mode) & 0o077:
        os.chmod(path, 0o700)


def _user_name(uid: int) -> str:
    import pwd

    try:
        return f"{pwd.getpwuid(uid).pw_name} (uid {uid})"
    except KeyError:
        return f"uid {uid}"


def write_secrets(spec: JobSpec, config: SiteConfig, run_id: str) -> None:
    """Write the secret values of ``spec`` to the private file its script sources
    (:mod:`hpcplat.submission.secrets`); nothing when it has none."""
    if not spec.environment.secrets:
        return
    path = secret_env.secrets_path(config, run_id)
    try:
        secret_env.write(path, spec.environment.secrets)
    except OSError as exc:
        raise UsageError(
            f"cannot write the secrets file {path}: {exc.strerror or exc}",
            hint="check that your job root (see `hpcplat submit --dry-run`) is writable; nothing was queued",
        ) from None


def check(
    spec: JobSpec,
    *,
    client: SlurmClient,
    config: SiteConfig,
    catalog: Callable[[], Any] | None = None,
) -> Checked:
    """Validation only (also what ``--dry-run`` runs)."""
    return validate(spec, client=client, config=config, catalog=catalog)


def explain_invalid(
    error: UsageError,
    shown: Sequence[str],
    spec_error: SpecError,
    *,
    client: SlurmClient | None = None,
    config: SiteConfig | None = None,
) -> UsageError:
    """A request whose spec is invalid (``error``, its problems ``shown`` as the user reads them),
    with whatever else validation finds in the rest of it, so that every problem is reported at
    once (:func:`hpcplat.submission.validate.with_cluster_problems`). ``error`` itself when nothing
    more is found or the cluster or configuration cannot be read."""
    try:
        config = config or load_config()
        if client is None:
            from hpcplat.slurm import get_client

            client = get_client()
    except HpcplatError as exc:
        log.debug("not checking the rest of an invalid request: %s", exc)
        return error
    chosen = config

    def catalog() -> Any:
        return open_catalog(chosen)

    return with_cluster_problems(error, shown, spec_error, client=client, config=config, catalog=catalog)


def slurm_request(checked: Checked, config: SiteConfig, *, python: str | None = None) -> dict[str, Any]:
    p = checked.placement
    r = checked.spec.resources
    return {
        "partition": p.partition,
        "qos": p.qos,
        "account": p.account,
        "tier": p.tier,
        "preemptible": p.preemptible,
        "warn_seconds": p.warn_seconds if p.preemptible else None,
        "max_requeues": p.max_requeues,
        "nodes": r.nodes,
        "tasks_per_node": r.tasks_per_node,
        "gpus_per_node": r.gpus_per_node,
        "cpus_per_task": r.cpus_per_task,
        "memory_mb": r.memory_mb,
        "time_limit_min": r.time_limit_min,
        "job_root": str(config.job_root_path()),
        "dependencies": list(checked.spec.depends_on),
    }


def make_intent(
    checked: Checked,
    config: SiteConfig,
    *,
    script: str,
    provenance: dict[str, Any],
    params: dict[str, Any] | None = None,
    request: dict[str, Any] | None = None,
) -> RunIntent:
    spec = checked.spec
    return RunIntent(
        name=spec.name,
        owner=current_user(),
        team=checked.placement.account or "",
        tier=checked.placement.tier or "",
        tags=list(spec.tags),
        spec=spec.to_dict(),
        params=dict(spec.params if params is None else params),
        datasets=list(checked.resolved_datasets),
        sbatch_script=script,
        slurm_request=request if request is not None else slurm_request(checked, config),
        provenance=provenance,
    )


def sbatch(
    client: SlurmClient,
    script: str,
    *,
    cwd: str | None,
    catalog: Catalog | None,
    run_ids: Sequence[str],
) -> str:
    """Run sbatch; on failure mark the runs NOT_SUBMITTED and raise :class:`SubmissionError`."""
    try:
        return client.submit(script, cwd=cwd).job_id
    except HpcplatError as exc:
        slurm_words = getattr(exc, "stderr", "").strip() or exc.message
        note = ""
        if catalog is not None and run_ids:
            failed: list[str] = []
            for run_id in run_ids:
                try:
                    catalog.abandon_intent(run_id, f"sbatch failed: {slurm_words}")
                except HpcplatError as inner:
                    failed.append(f"{run_id} ({inner.message})")
            shown = run_ids[0] if len(run_ids) == 1 else f"{len(run_ids)} runs"
            note = f"; {shown} marked NOT_SUBMITTED in the catalog"
            if failed:
                note += f", except {', '.join(failed)} which the catalog refused to update"
        raise SubmissionError(
            f"Slurm refused the job: {slurm_words}{note}",
            hint="nothing was queued; fix the request and submit again",
        ) from exc


def confirm(
    client: SlurmClient,
    catalog: Catalog,
    job_id: str,
    confirmations: Sequence[tuple[str, str]],
    *,
    catalog_url: str,
) -> None:
    """Record (run id, job id) pairs; if the catalog fails, cancel ``job_id`` or spool a record."""
    done = 0
    try:
        for run_id, attempt_job in confirmations:
            catalog.confirm_submission(run_id, attempt_job)
            done += 1
    except Exception as exc:  # whatever failed, the job must not stay untracked
        reason = exc.message if isinstance(exc, HpcplatError) else f"{type(exc).__name__}: {exc}"
        what = f"job {job_id} was queued but the catalog could not record it ({reason})"
        try:
            client.cancel([job_id])
        except HpcplatError as cancel_exc:
            records = []
            for run_id, attempt_job in confirmations[done:]:
                try:
                    records.append(
                        str(
                            pending.write_pending(run_id, attempt_job, catalog_url=catalog_url, reason=reason)
                        )
                    )
                except OSError as spool_exc:
                    raise SubmissionError(
                        f"{what}; cancelling it failed too ({cancel_exc.message}) and no reconciliation "
                        f"record could be written ({spool_exc}). Job {job_id} is running UNTRACKED",
                        hint=f"cancel it yourself: scancel {job_id}",
                    ) from exc
            raise SubmissionError(
                f"{what}; cancelling it failed too ({cancel_exc.message}). It keeps running and will be "
                f"attached to its run by `hpcplat reconcile` (record: {records[0] if records else '?'})",
                hint=f"run `hpcplat reconcile` when the catalog is back, or cancel with scancel {job_id}",
            ) from exc
        raise SubmissionError(
            f"{what}; the job was cancelled, nothing runs",
            hint="check the catalog (`hpcplat db current`) and submit again",
        ) from exc


def submit(
    spec: JobSpec,
    *,
    client: SlurmClient | None = None,
    config: SiteConfig | None = None,
    catalog: Catalog | None = None,
    cwd: str | None = None,
    python: str | None = None,
) -> Submission:
    """Validate, record and submit ``spec``; returns the run id and Slurm job id.

    ``client``, ``config`` and ``catalog`` default to :func:`hpcplat.slurm.get_client`, the site
    configuration and the catalog it names (no catalog configured: the job is submitted untracked,
    with a warning). ``cwd`` is the directory relative working directories are taken from.
    """
    config = config or load_config()
    if client is None:
        from hpcplat.slurm import get_client

        client = get_client()
    spec = secret_env.resolve(resolve_workdir(spec, cwd))
    workdir = spec.workdir or os.getcwd()
    # Provenance (git subprocesses) is captured in a thread while validation and rendering run
    # here; it is waited for before the intent is recorded, so nothing changes in what is written
    # or when. Without a catalog there is nothing to record it in.
    provenance = _start_capture(workdir) if catalog is not None or config.catalog_url else None
    held: dict[str, Catalog | None] = {}

    def get_catalog() -> Catalog | None:
        if "c" not in held:
            held["c"] = catalog if catalog is not None else open_catalog(config)
        return held["c"]

    checked = check(spec, client=client, config=config, catalog=get_catalog)
    job_root = ensure_job_root(config)
    cat = get_catalog()
    if cat is None:
        log.warning(
            "no catalog configured ([catalog] url): job %r is submitted without being recorded", spec.name
        )
        run_id = str(uuid.uuid4())
        script = render(
            checked.spec,
            config,
            run_id=run_id,
            placement=checked.placement,
            python=python,
            datasets=checked.datasets,
        )
        write_secrets(checked.spec, config, run_id)
        job_id = sbatch(client, script, cwd=workdir, catalog=None, run_ids=())
        return Submission(
            run_id, job_id, script, f"{job_root}/{job_id}.out", f"{job_root}/{job_id}", tracked=False
        )

    # The run id is chosen here, so that the script recorded with the intent is the one submitted.
    run_id = str(uuid.uuid4())
    script = render(
        checked.spec,
        config,
        run_id=run_id,
        placement=checked.placement,
        python=python,
        datasets=checked.datasets,
    )
    captured = provenance.result() if provenance is not None else capture_provenance(workdir)
    intent = make_intent(checked, config, script=script, provenance=captured)
    intent.run_id = run_id
    write_secrets(checked.spec, config, run_id)
    run_id = cat.record_intent(intent)
    job_id = sbatch(client, script, cwd=workdir, catalog=cat, run_ids=[run_id])
    confirm(client, cat, job_id, [(run_id, job_id)], catalog_url=config.catalog_url or "")
    return Submission(run_id, job_id, script, f"{job_root}/{job_id}.out", f"{job_root}/{job_id}")


def dry_run(
    spec: JobSpec,
    *,
    client: SlurmClient | None = None,
    config: SiteConfig | None = None,
    cwd: str | None = None,
    python: str | None = None,
    validate_cluster: bool = True,
) -> str:
    """The script ``submit`` would give sbatch (validated against the cluster unless
    ``validate_cluster`` is false); nothing is recorded or submitted."""
    config = config or load_config()
    spec = resolve_workdir(spec, cwd)
    if validate_cluster:
        if client is None:
            from hpcplat.slurm import get_client

            client = get_client()
        checked = check(spec, client=client, config=config, catalog=lambda: open_catalog(config))
        return render(
            checked.spec,
            config,
            run_id="DRY-RUN",
            placement=checked.placement,
            python=python,
            datasets=checked.datasets,
        )
    return render(spec, config, run_id="DRY-RUN", python=python)


def submit_array_script(
    client: SlurmClient,
    script: str,
    *,
    cwd: str,
    catalog: Catalog | None,
    run_ids: Sequence[str],
    catalog_url: str,
    array: ArrayPart,
) -> str:
    """sbatch one array whose task ``i`` is run ``run_ids[i]``; confirm every task (or undo)."""
    if len(run_ids) != array.size and catalog is not None:
        raise ValueError("one run id per array task")
    job_id = sbatch(client, script, cwd=cwd, catalog=catalog, run_ids=run_ids)
    if catalog is not None:
        confirm(
            client,
            catalog,
            job_id,
            [(run_id, f"{job_id}_{i}") for i, run_id in enumerate(run_ids)],
            catalog_url=catalog_url,
        )
    return job_id


__all__ = ["Submission", "SubmissionError", "UsageError", "dry_run", "submit"]
