"""Kept for hook wrappers written before the package layout (efajob 0.1.0 wrote
`python -m efajob.hook` or `from efajob.hook import main`): the hook lives in hooks/entry.py.
`efajob install hooks` writes wrappers that call it directly. Standard library only."""
import sys

from efajob.hooks.entry import main

if __name__ == "__main__":
    sys.exit(main())
