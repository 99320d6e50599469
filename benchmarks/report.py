"""Median-time ratios of each backend against the reference, from pytest-benchmark JSON files,
with the matrix products' achieved GFLOP/s as a fraction of the matmul peak measured in the same runs.

Given several files (repeated runs), each time is the median over the runs of each run's median:
this machine is shared and noisy, so one run is not a measurement.

    for i in 1 2 3; do pytest benchmarks/test_ops.py --benchmark-json=ops$i.json; done
    python benchmarks/report.py ops1.json ops2.json ops3.json
"""

import json
import statistics
import sys
from collections import defaultdict


def main(paths: list[str]) -> int:
    samples, flops, peak_samples = defaultdict(lambda: defaultdict(list)), {}, defaultdict(list)
    for path in paths:
        with open(path) as f:
            data = json.load(f)
        for bench in data["benchmarks"]:
            info = bench["extra_info"]
            if info["op"] == "matmul_peak":
                peak_samples[info["dtype"]].append(info["flops"] / bench["stats"]["median"] / 1e9)
                continue
            key = (info["op"], info["shape"], info["dtype"])
            samples[key][info["backend"]].append(bench["stats"]["median"])
            flops[key] = info.get("flops", 0)
    rows = {key: {b: statistics.median(v) for b, v in by_backend.items()} for key, by_backend in samples.items()}
    peak = {d: statistics.median(v) for d, v in peak_samples.items()}
    backends = sorted({b for r in rows.values() for b in r if b != "reference"})
    cpu = data["machine_info"].get("cpu", {})
    print(f"Machine: {cpu.get('brand_raw', '?')}, {cpu.get('count', '?')} cores; python {data['machine_info'].get('python_version')}; "
          f"commit {data.get('commit_info', {}).get('id', '?')[:10]}; {len(paths)} run(s), median of run medians")
    print("Matmul peak (NumPy BLAS, 1024^3, all threads): "
          + ", ".join(f"{d} {g:.1f} GFLOP/s" for d, g in sorted(peak.items())))
    print()
    header = "| op | shape | dtype | reference µs | " + " | ".join(f"{b} µs | {b} speedup" for b in backends)
    header += " | GFLOP/s (" + ", ".join(backends) + ") | % of peak |"
    print(header)
    print("|---|---|---|---:|" + "---:|---:|" * len(backends) + "---:|---:|")
    for key, times in sorted(rows.items()):
        op, shape, dtype = key
        ref = times.get("reference")
        cells = []
        for b in backends:
            t = times.get(b)
            cells.append(f"{t * 1e6:.1f} | {ref / t:.2f}x" if t and ref else "n/a | n/a")
        gflops = ""
        fraction = ""
        if flops[key] and backends and times.get(backends[0]):
            g = flops[key] / times[backends[0]] / 1e9
            gflops = f"{g:.1f}"
            fraction = f"{100 * g / peak[dtype]:.0f}%" if dtype in peak else ""
        print(f"| {op} | {shape} | {dtype} | {ref * 1e6:.1f} | " + " | ".join(cells) + f" | {gflops} | {fraction} |")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
