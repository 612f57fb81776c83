"""Data-parallel training against one process: seconds per epoch and NDCG@10.

Runs ``streamrec train`` once as a plain process and once under
``torchrun --nproc-per-node N ... --distributed`` for each N, with the same data,
settings and seed (1 process with torch's default threads and with one thread;
each rank takes the machine's cores shared out among the ranks; the total batch is ``batch_size`` either way: each rank takes its
piece of every batch), prints one line per run and writes the reports to a JSON file.
Also records the machine's plain-Python speed (a loop summing 10**7 integers).

    python -m bench.distributed --synthetic --epochs 5
    python -m bench.distributed --data Beauty.txt --config training/configs/beauty.toml \\
        --epochs 2 --out results/distributed-beauty.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any


def python_loop_seconds() -> float:
    start = time.perf_counter()
    total = 0
    for i in range(10**7):
        total += i
    return time.perf_counter() - start


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _run(cmd: list[str], env: dict[str, str]) -> dict[str, Any]:
    start = time.monotonic()
    done = subprocess.run(cmd, capture_output=True, text=True, check=False, env={**os.environ, **env})
    wall = time.monotonic() - start
    if done.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    report: dict[str, Any] = json.loads(done.stdout[done.stdout.index("{"):])
    return {"command": " ".join([*(f"{k}={v}" for k, v in env.items()), *cmd]),
            "wall_seconds": round(wall, 1), "report": report}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--synthetic", action="store_true")
    src.add_argument("--data", type=Path)
    p.add_argument("--config", type=Path)
    p.add_argument("--epochs", type=int, default=5)
    p.add_argument("--procs", default="2", help="comma-separated rank counts to run beside one process")
    p.add_argument("--no-refit", action="store_true", help="pass --no-refit (a config with refit = true "
                   "otherwise trains the selected epochs twice)")
    p.add_argument("--out", type=Path, default=Path("results/distributed-synthetic.json"))
    args = p.parse_args()

    train = ["train", "--json", "--epochs", str(args.epochs), "--patience", str(args.epochs)]
    train += ["--synthetic"] if args.synthetic else ["--data", str(args.data)]
    train += ["--config", str(args.config)] if args.config else []
    train += ["--no-refit"] if args.no_refit else []
    loop = python_loop_seconds()
    print(f"python loop over 10**7 integers: {loop:.2f} s; {os.cpu_count()} cores", flush=True)
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        one = [sys.executable, "-m", "cli", *train, "--out", f"{tmp}/one"]
        plans = [("1 process", one, {}), ("1 process, 1 thread", one, {"OMP_NUM_THREADS": "1"})]
        for n in (int(x) for x in args.procs.split(",")):
            plans.append((f"{n} ranks", [sys.executable, "-m", "torch.distributed.run",
                                        "--nproc-per-node", str(n), "--master-addr", "127.0.0.1",
                                        "--master-port", str(_free_port()), "-m", "cli", *train, "--distributed",
                                        "--out", f"{tmp}/ranks{n}"], {}))
        for name, cmd, env in plans:
            run = _run(cmd, env)
            r = run["report"]
            run.update(name=name, seconds_per_epoch=r["seconds_per_epoch"], epochs=r["epochs"],
                       valid_ndcg10=r["valid"]["full"]["ndcg@10"],
                       test_ndcg10=r["test"]["full"]["ndcg@10"])
            runs.append(run)
            print(f"{name:20s} {r['seconds_per_epoch']:7.2f} s/epoch  epochs {r['epochs']}  "
                  f"valid NDCG@10 {run['valid_ndcg10']:.4f}  test NDCG@10 {run['test_ndcg10']:.4f}  "
                  f"(wall {run['wall_seconds']} s)", flush=True)
    for run in runs[2:]:
        run["speedup"] = round(runs[0]["seconds_per_epoch"] / run["seconds_per_epoch"], 2)
        run["speedup_vs_1_thread"] = round(runs[1]["seconds_per_epoch"] / run["seconds_per_epoch"], 2)
        print(f"{run['name']}: {run['speedup']}x the epochs per second of 1 process, "
              f"{run['speedup_vs_1_thread']}x of 1 process with 1 thread")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"python_loop_seconds": round(loop, 2), "cores": os.cpu_count(),
                                    "machine": platform.processor() or platform.machine(),
                                    "runs": runs}, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
