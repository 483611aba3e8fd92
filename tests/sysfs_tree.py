"""Hand-built sysfs trees for unit tests of the reader (independent of the simulator)."""
from __future__ import annotations

import os
from typing import Dict, Optional


def write(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)


def make_device(root: str, name: str, port: Dict[str, str], dev: Optional[Dict[str, str]] = None,
                vendor: Optional[str] = "0x1d0f", driver: str = "efa", rate: str = "100 Gb/sec (4X EDR)") -> str:
    d = os.path.join(root, "class", "infiniband", name)
    if vendor is not None:
        write(os.path.join(d, "device", "vendor"), vendor + "\n")
    write(os.path.join(d, "device", "device"), "0xefa2\n")
    drv = os.path.join(root, "bus", "pci", "drivers", driver)
    os.makedirs(drv, exist_ok=True)
    os.symlink(drv, os.path.join(d, "device", "driver"))
    write(os.path.join(d, "ports", "1", "rate"), rate + "\n")
    write(os.path.join(d, "ports", "1", "state"), "4: ACTIVE\n")
    for k, v in port.items():
        write(os.path.join(d, "ports", "1", "hw_counters", k), v)
    write(os.path.join(d, "ports", "1", "hw_counters", "lifespan"), "12\n")
    if dev is not None:
        for k, v in dev.items():
            write(os.path.join(d, "hw_counters", k), v)
        write(os.path.join(d, "hw_counters", "lifespan"), "12\n")
    return d


def set_counter(devpath: str, name: str, value: int, port: bool = True) -> None:
    """In place, as sysfs does: the inode never changes (see docs/simulator.md)."""
    path = os.path.join(devpath, "ports", "1", "hw_counters", name) if port else os.path.join(devpath, "hw_counters", name)
    fd = os.open(path, os.O_WRONLY)
    try:
        data = f"{value}\n".encode()
        os.pwrite(fd, data, 0)
        os.ftruncate(fd, len(data))
    finally:
        os.close(fd)
