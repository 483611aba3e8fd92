"""Job reports: the model, the finding rules, the assembly from store and Slurm, the renderers."""
