"""Node readers: EFA device discovery and the counter sampler, snapshots and counter maths, ENA
allowance counters, the instance-type table, IMDS, the node's local SQLite store. Standard library only.

Kept empty of imports: importing a module below costs only that module (the hook path).
"""
