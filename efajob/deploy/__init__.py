"""Installing efajob on a node: the files `efajob install` writes (deploy/units.py), the record
of what it wrote (deploy/manifest.py) that `efajob uninstall` undoes, and `efajob doctor`'s
checks (deploy/doctor.py)."""
