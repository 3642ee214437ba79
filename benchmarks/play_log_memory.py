"""Play-log validation in bounded memory: the streamed reader against reading the log whole.

Writes synthetic play logs of ``--lines`` and ``--lines / 10`` lines (about 30 plays per
user, songs from a catalogue of 200,000), then validates each in a fresh process twice:
streamed in chunks of ``--chunk`` lines (what the ``validate`` stage does) and whole, as one
chunk (the baseline).
Reports wall time and peak RSS (VmHWM of the child) and how each grows with the log. The
figures go to the ``play_log_memory`` section of ``reports/benchmarks.md``.

    python benchmarks/play_log_memory.py [--lines 10000000] [--chunk 500000]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from musicrec.io import replace_section

# The peak is VmHWM of the child's own address space: ru_maxrss would also count the pages of
# the parent it was forked from (Linux carries the old high-water mark across exec).
CHILD = """
import json, sys, time
from musicrec.validate import check_play_log
start = time.perf_counter()
plays, _, _ = check_play_log(sys.argv[1], chunk_lines=int(sys.argv[2]))
seconds = time.perf_counter() - start
status = open("/proc/self/status").read().split("VmHWM:")[1]
peak_mb = int(status.split()[0]) / 1024
print(json.dumps({"rows": len(plays), "seconds": seconds, "peak_mb": peak_mb}))
"""


def write_log(path: Path, n_lines: int, catalogue: int = 200_000, seed: int = 0) -> None:
    """``n_lines`` plays: user ``i // 30`` and a song drawn from ``catalogue`` songs."""
    rng = np.random.default_rng(seed)
    songs = rng.integers(0, catalogue, n_lines)
    counts = rng.integers(1, 9, n_lines)
    with open(path, "w") as out:
        for start in range(0, n_lines, 1_000_000):
            rows = range(start, min(n_lines, start + 1_000_000))
            out.write("".join(f"u{i // 30}\ts{songs[i]}\t{counts[i]}\n" for i in rows))


def measure(path: Path, chunk_lines: int) -> dict:
    """Validate ``path`` in a fresh process; its rows, wall seconds and peak RSS (MB)."""
    result = subprocess.run(
        [sys.executable, "-c", CHILD, str(path), str(chunk_lines)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(result.stdout.strip().splitlines()[-1])


def compare(
    folder: Path, n_lines: int, chunk_lines: int, catalogue: int = 200_000
) -> dict[str, dict[int, dict]]:
    """mode ('streamed', 'whole') -> lines -> measure(), for n_lines and n_lines // 10."""
    sizes = [n_lines // 10, n_lines]
    results: dict[str, dict[int, dict]] = {"streamed": {}, "whole": {}}
    for size in sizes:
        log = folder / f"plays_{size}.tsv"
        write_log(log, size, catalogue)
        results["streamed"][size] = measure(log, chunk_lines)
        results["whole"][size] = measure(log, size + 1)
        log.unlink()
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=10_000_000)
    parser.add_argument("--chunk", type=int, default=500_000)
    parser.add_argument("--out", type=Path, default=Path("reports/benchmarks.md"))
    args = parser.parse_args(argv)
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as folder:
        results = compare(Path(folder), args.lines, args.chunk)
    small, large = args.lines // 10, args.lines
    lines = [
        "## Play-log validation memory",
        "",
        f"`python benchmarks/play_log_memory.py --lines {args.lines} --chunk {args.chunk}`: "
        "each log validated in a fresh process, streamed in chunks (the `validate` stage) "
        "and whole (one chunk, the baseline).",
        "",
        f"| mode | {small:,} lines: s / peak MB | {large:,} lines: s / peak MB | growth MB |",
        "|---|---|---|---|",
    ]
    for mode, by_size in results.items():
        a, b = by_size[small], by_size[large]
        lines.append(
            f"| {mode} | {a['seconds']:.1f} / {a['peak_mb']:.0f} | "
            f"{b['seconds']:.1f} / {b['peak_mb']:.0f} | {b['peak_mb'] - a['peak_mb']:.0f} |"
        )
    growth = {
        mode: by_size[large]["peak_mb"] - by_size[small]["peak_mb"]
        for mode, by_size in results.items()
    }
    lines += [
        "",
        f"Streamed memory growth / whole: **{growth['streamed'] / growth['whole']:.2f}**; "
        f"streamed time / whole: "
        f"{results['streamed'][large]['seconds'] / results['whole'][large]['seconds']:.2f}.",
    ]
    replace_section(args.out, "play_log_memory", "\n".join(lines))
    print("\n".join(lines[5:]))
    print(f"({time.perf_counter() - start:.0f} s) -> {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
