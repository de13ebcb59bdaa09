"""Batch generation throughput: N prompts as N separate `x2i generate` runs (a shell loop: every run loads the
models again) vs one `x2i generate --batch` (models loaded once), on the built-in shapes world.

    python benchmarks/bench_batch.py            # 8 prompts
    python benchmarks/bench_batch.py -n 16

Prints images/s of each way and their ratio from one run (CPU: only the ratio is meaningful).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPTS = ["a red circle", "a small blue square", "a big green triangle at the top", "ein gelbes Quadrat",
           "a purple star on the left", "a small orange circle at the bottom", "a big red square", "a blue triangle"]


def x2i(args: list[str]) -> None:
    code = "import sys; from x2i_cli.main import main; sys.exit(main(sys.argv[1:]))"
    subprocess.run([sys.executable, "-c", code, *args], check=True, capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=8, help="prompts")
    n = parser.parse_args().n
    prompts = [PROMPTS[i % len(PROMPTS)] for i in range(n)]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        start = time.perf_counter()
        for i, text in enumerate(prompts):
            x2i(["generate", text, "-o", str(tmp / "loop" / f"{i}.png")])
        loop = time.perf_counter() - start
        jsonl = tmp / "p.jsonl"
        jsonl.write_text("".join(json.dumps({"prompt": t}) + "\n" for t in prompts))
        start = time.perf_counter()
        x2i(["generate", "--batch", str(jsonl), "-o", str(tmp / "batch")])
        batch = time.perf_counter() - start
    print(f"| way | {n} images, s | images/s |")
    print("|---|---|---|")
    print(f"| shell loop of `x2i generate` | {loop:.1f} | {n / loop:.3f} |")
    print(f"| `x2i generate --batch` | {batch:.1f} | {n / batch:.3f} |")
    print(f"batch / loop throughput: {loop / batch:.2f}x")


if __name__ == "__main__":
    main()
