# Types of the optional C extension built from _fastread.c (see its header comment).
from typing import List, Sequence, Tuple, Union

API: int
READ_SIZE: int

class Reader:
    def __init__(self, fds: Sequence[int]) -> None: ...
    def __len__(self) -> int: ...
    # (True, values) when every file was "<digits>\n" within 64 bits; else (False, items):
    # the bytes read, or the errno of a failed pread.
    def read(self, n: int = ...) -> Tuple[bool, List[Union[int, bytes]]]: ...
