"""``hpcplat template list | show NAME | render NAME --set key=value | submit NAME --set key=value``:
the sbatch templates. ``render`` and ``submit`` check the rendered request against the live cluster
first (exit 2 and nothing written or submitted when no node could run it)."""

from __future__ import annotations

import os

import click

from hpcplat.errors import CommandError, HpcplatError


def _rendered(name: str, assignments: tuple[str, ...], validate: bool) -> str:
    """The script of template ``name``, checked against the cluster unless ``validate`` is off."""
    from hpcplat.submission import library

    script = library.render(name, library.parse_assignments(assignments))
    if validate:
        from hpcplat.siteconfig import load
        from hpcplat.slurm import get_client

        try:
            library.check(name, script, client=get_client(), config=load())
        except CommandError as exc:
            raise HpcplatError(
                f"cannot check template {name!r} against the cluster: {exc.message}",
                hint="render it without asking the cluster with --no-validate",
            ) from None
    return script


_NO_VALIDATE = click.option(
    "--no-validate", is_flag=True, help="Do not check the request against the cluster (offline)."
)
_SET = click.option(
    "--set", "assignments", multiple=True, metavar="KEY=VALUE", help="A template variable (repeatable)."
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def template() -> None:
    """sbatch templates for power users: single GPU, multi-node DDP, array sweep, preemptible."""


@template.command("list")
def list_() -> None:
    """List the templates."""
    from hpcplat.submission import library

    templates = library.list_templates()
    width = max((len(t.name) for t in templates), default=0)
    for t in templates:
        click.echo(f"{t.name.ljust(width)}  {t.summary}")


@template.command()
@click.argument("name")
@click.option("--source", is_flag=True, help="Print the template file itself.")
def show(name: str, source: bool) -> None:
    """Document a template's variables (or print its source)."""
    from hpcplat.submission import library

    t = library.get_template(name)
    if source:
        click.echo(t.path.read_text(), nl=False)
        return
    click.echo(f"{t.name}: {t.summary}")
    click.echo(f"file: {t.path}")
    click.echo("variables (--set NAME=VALUE):")
    width = max((len(v.name) for v in t.variables), default=0)
    for v in t.variables:
        if v.required:
            default = "required"
        elif v.name == "python":
            default = "default: this hpcplat's Python"
        else:
            default = f"default: {v.default!r}"
        click.echo(f"  {v.name.ljust(width)}  {v.type:5}  {v.help} ({default})")
    required = "".join(
        f" --set {v.name}=..." for v in t.variables if v.required and v.name not in ("command",)
    )
    click.echo(
        f"example: hpcplat template render {t.name} --set command='python train.py'{required} > job.sbatch"
    )


@template.command()
@click.argument("name")
@_SET
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file.")
@_NO_VALIDATE
def render(name: str, assignments: tuple[str, ...], output: str | None, no_validate: bool) -> None:
    """Print a ready-to-sbatch script from template NAME, checked against the cluster."""
    script = _rendered(name, assignments, not no_validate)
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(script)
        click.echo(f"wrote {output}; submit it with: sbatch {output}", err=True)
    else:
        click.echo(script, nl=False)


@template.command()
@click.argument("name")
@_SET
@_NO_VALIDATE
def submit(name: str, assignments: tuple[str, ...], no_validate: bool) -> None:
    """Render template NAME, check it against the cluster and sbatch it from this directory."""
    from hpcplat.slurm import get_client

    script = _rendered(name, assignments, not no_validate)
    client = get_client()
    job_id = client.submit(script, cwd=os.getcwd()).job_id
    click.echo(f"Submitted batch job {job_id}")
    output = client.job_paths(job_id).get("StdOut", "")
    if output and "%" not in output and "4294967294" not in output:
        click.echo(f"  output: {output}")
    click.echo(f"  follow: hpcplat logs -f {job_id}    wait: hpcplat wait {job_id}")
