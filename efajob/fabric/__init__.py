"""Fabric health across jobs: which nodes keep turning up in findings (`efajob nodes`)."""
