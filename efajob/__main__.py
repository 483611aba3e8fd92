"""`python -m efajob ...` runs the `efajob` command."""
from .cli import main

main(prog_name="efajob")
