"""efajob: exact, job-scoped EFA network accounting for Slurm clusters on AWS."""

__version__ = "0.1.0"
