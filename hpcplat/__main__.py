"""``python -m hpcplat`` is the ``hpcplat`` command."""

from hpcplat.cli.main import main

main()
