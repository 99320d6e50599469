"""What machine this is, for `fastbp info`, benchmark tables and memory estimates."""

import os
import platform


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def available_memory() -> int | None:
    """Bytes of memory a new allocation can get now (Linux: MemAvailable), else the physical total;
    None where neither is known."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        return None


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB"):
        if n < 1024 or unit == "PiB":
            return f"{n:.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return f"{n:.1f} PiB"


def require_memory(needed: int, what: str) -> None:
    """A MemoryError that says what needed how much, before an allocation that cannot succeed."""
    free = available_memory()
    if free is not None and needed > free:
        raise MemoryError(f"{what} needs {human_bytes(needed)}, more than the {human_bytes(free)} of memory available here")
