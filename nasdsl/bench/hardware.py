"""What this CPU can do, read from the kernel's CPU flags, and a key that identifies the machine.

bf16 arithmetic needs ``avx512_bf16`` (AVX-512 BF16 dot products: about twice fp32's
multiply-adds per instruction) or ``amx_bf16`` (AMX tiles: the 4x-and-more class of speedups);
int8 runs everywhere but pays most with ``avx512_vnni``/``avx_vnni`` or ``amx_int8``. The
bench offers bf16 only where one of the bf16 flags is present, and says which.
"""

from __future__ import annotations

import hashlib
import os
import platform
from dataclasses import dataclass
from functools import cache
from pathlib import Path

#: the flags that matter to the engines' kernels, in the order they are reported
FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


@dataclass(frozen=True)
class Machine:
    """The CPU: its model name, the relevant flags it has, the cores this process may use, and
    the size of one core's L2 cache in bytes."""

    model: str
    flags: tuple[str, ...]
    cores: int
    l2: int = 1 << 20

    @property
    def bf16(self) -> bool:
        return "avx512_bf16" in self.flags or "amx_bf16" in self.flags

    @property
    def amx(self) -> bool:
        return "amx_bf16" in self.flags

    @property
    def vnni(self) -> bool:
        return any(f in self.flags for f in ("avx512_vnni", "avx_vnni", "amx_int8"))

    def precisions(self) -> tuple[str, ...]:
        """The precisions worth measuring here: fp32 and int8 always, bf16 where a bf16 flag is."""
        return ("fp32", "bf16", "int8") if self.bf16 else ("fp32", "int8")

    def describe(self) -> str:
        """One line: model, cores, flags, and what bf16 runs on."""
        if self.amx:
            bf16 = "bf16: AMX tiles"
        elif self.bf16:
            bf16 = "bf16: AVX-512 BF16 only (no AMX: expect far less than AMX's speedups)"
        else:
            bf16 = "bf16: not supported (no avx512_bf16 or amx_bf16)"
        return f"{self.model}, {self.cores} cores, flags {' '.join(self.flags) or '(none)'}; {bf16}"

    def key(self) -> str:
        """A short hash of everything here (a calibration is valid for one machine only)."""
        text = f"{self.model}|{','.join(self.flags)}|{self.cores}|{self.l2}|{platform.machine()}"
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@cache
def machine() -> Machine:
    """This machine (read once per process)."""
    model, flags = _cpuinfo()
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return Machine(model or platform.processor() or platform.machine(), flags, cores, _l2())


def _l2() -> int:
    """One core's L2 cache in bytes, from sysfs (1 MiB where it does not say)."""
    folder = Path("/sys/devices/system/cpu/cpu0/cache")
    for index in sorted(folder.glob("index*")) if folder.is_dir() else []:
        try:
            if (index / "level").read_text().strip() == "2":
                text = (index / "size").read_text().strip()
                scale = {"K": 1 << 10, "M": 1 << 20}.get(text[-1:], 1)
                return int(text.rstrip("KM")) * scale
        except (OSError, ValueError):
            continue
    return 1 << 20


def _cpuinfo() -> tuple[str, tuple[str, ...]]:
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return "", ()
    model, found = "", set()
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip()
        if key == "model name" and not model:
            model = value.strip()
        elif key == "flags" and not found:
            found = set(value.split())
    return model, tuple(f for f in FLAGS if f in found)


__all__ = ["FLAGS", "Machine", "machine"]
