"""Job summaries in Slurm's accounting (AdminComment) and reading jobs back from it."""
