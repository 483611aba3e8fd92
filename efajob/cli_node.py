"""Kept for systemd units written before the package layout (`python -m efajob.cli_node daemon`):
runs the whole `efajob` command. `efajob install systemd` now writes `python -m efajob daemon`."""
from efajob.cli.main import main

if __name__ == "__main__":
    main(prog_name="efajob")
