"""``hpcplat template list | show NAME | render NAME --set key=value``: the sbatch templates."""

from __future__ import annotations

import click


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
    click.echo(f"example: hpcplat template render {t.name} --set command='python train.py' > job.sbatch")


@template.command()
@click.argument("name")
@click.option(
    "--set", "assignments", multiple=True, metavar="KEY=VALUE", help="A template variable (repeatable)."
)
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True), help="Write to this file.")
def render(name: str, assignments: tuple[str, ...], output: str | None) -> None:
    """Print a ready-to-sbatch script from template NAME."""
    from hpcplat.submission import library

    script = library.render(name, library.parse_assignments(assignments))
    if output:
        with open(output, "w", encoding="utf-8") as fh:
            fh.write(script)
        click.echo(f"wrote {output}; submit it with: sbatch {output}", err=True)
    else:
        click.echo(script, nl=False)
