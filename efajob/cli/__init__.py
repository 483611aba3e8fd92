"""The `efajob` command line (click): the only place that prints and chooses exit codes."""
