"""`python -m efajob ...` runs the `efajob` command."""
from efajob.cli.main import main

main(prog_name="efajob")
