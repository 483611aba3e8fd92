"""The Prolog/Epilog path: the run dir, job-node records, the local outbox and its delivery, the
end-of-job finishing step, the `efajob-hook` entry point. Standard library only.

Kept empty of imports: importing a module below costs only that module (the hook path).
"""
