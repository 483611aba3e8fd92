"""Reading the job store on the shared filesystem: a job's records, recent jobs, node status files."""
