"""What Slurm says: job ids and their environment, hostlists, slurm.conf, the Slurm adapter
(pyslurm or scontrol/sacct). Standard library only (pyslurm when importable).

Kept empty of imports: importing a module below costs only that module (the hook path).
"""
