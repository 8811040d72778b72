"""Load test of the served app: concurrent clients requesting the page, memory after they leave.

Starts ``workbench.app.serve`` in a subprocess (the offline demo bundle, from the cache), then
``--clients`` threads each request ``GET /`` ``--rounds`` times. Reports errors, latency
percentiles, the server's RSS before the load, right after it and after the server has dropped
the sessions (Bokeh removes an unused session after ``--session-lifetime`` seconds), and how many
session autosave files the load left behind. It also checks that a request with a foreign
``Host`` header is refused (403).

Ours (the default: a page request builds only the header and empty tabs; a tab's panel is built
when the browser shows it) runs beside the obvious alternative, building every tab of the session
on every request (``create_app(lazy=False)``, what the app did before).

    python benchmarks/bench_app_load.py                 # 20 clients x 10 rounds, both modes
    python benchmarks/bench_app_load.py --modes lazy --tiny

The last line is JSON: ``errors, p50_ms, p95_ms, rss_growth_mb, session_files`` (ours) plus the
same figures for the eager build under ``eager``.
"""
from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import summary, table

SERVER = """
import sys
from workbench.app import default_bundle, serve
if __name__ == "__main__":  # the Explore tab's map builder starts processes with spawn
    bundle = default_bundle(progress=False)
    print("READY", flush=True)
    serve(port=int(sys.argv[1]), bundle=bundle, lazy=sys.argv[2] == "lazy",
          unused_session_lifetime_milliseconds=int(float(sys.argv[3]) * 1000),
          check_unused_sessions_milliseconds=int(float(sys.argv[3]) * 500))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def rss_mb(pid: int) -> float:
    import psutil

    return psutil.Process(pid).memory_info().rss / 2**20


def get(url: str, host: str | None = None, timeout: float = 300.0) -> tuple[int, float]:
    req = urllib.request.Request(url, headers={"Host": host} if host else {})
    t0 = time.perf_counter()
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            body = r.read()
            code = r.status
        if code == 200 and b"<title>CoE Workbench</title>" not in body:
            code = 0  # Panel's error page: the app function raised
    except urllib.error.HTTPError as exc:
        code = exc.code
    except OSError:
        code = -1
    return code, (time.perf_counter() - t0) * 1e3


def session_files(folder: Path) -> set[str]:
    return {p.name for p in folder.glob("mapping-*.json")} if folder.is_dir() else set()


def run_mode(mode: str, args, sessions_dir: Path) -> dict:
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1", "TOKENIZERS_PARALLELISM": "false",
           "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent)}
    if args.tiny:
        env["COE_DEMO_KIND"] = "tiny"
    with tempfile.TemporaryDirectory() as tmp:
        script = Path(tmp) / "server.py"
        script.write_text(SERVER)
        proc = subprocess.Popen([sys.executable, str(script), str(port), mode, str(args.session_lifetime)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                if line.startswith("READY"):
                    break
            else:
                raise SystemExit(f"the {mode} server did not start")
            threading.Thread(target=lambda: [None for _ in proc.stdout], daemon=True).start()
            url = f"http://127.0.0.1:{port}/"
            for _ in range(600):
                code, _ = get(url, timeout=60)
                if code == 200:
                    break
                time.sleep(0.5)
            for _ in range(3):  # warm-up: first sessions import the views
                get(url)
            time.sleep(args.session_lifetime * 2 + 2)
            files_before = session_files(sessions_dir)
            rss0 = rss_mb(proc.pid)
            lat: list[float] = []
            errors: list[int] = []
            lock = threading.Lock()

            def client() -> None:
                for _ in range(args.rounds):
                    code, ms = get(url)
                    with lock:
                        lat.append(ms)
                        if code != 200:
                            errors.append(code)

            threads = [threading.Thread(target=client) for _ in range(args.clients)]
            t0 = time.perf_counter()
            for t in threads:
                t.start()
            for t in threads:
                t.join()
            wall = time.perf_counter() - t0
            rss_peak = rss_mb(proc.pid)
            foreign, _ = get(url, host="attacker.example:80")
            time.sleep(args.session_lifetime * 2 + 5)  # the server drops the unused sessions
            rss_after = rss_mb(proc.pid)
            new_files = session_files(sessions_dir) - files_before
        finally:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
    lat.sort()
    return {"mode": mode, "requests": len(lat), "errors": len(errors),
            "p50_ms": round(statistics.median(lat), 1),
            "p95_ms": round(lat[min(len(lat) - 1, int(0.95 * len(lat)))], 1),
            "wall_s": round(wall, 1), "rss_before_mb": round(rss0, 1),
            "rss_peak_mb": round(rss_peak, 1), "rss_after_mb": round(rss_after, 1),
            "rss_growth_mb": round(rss_after - rss0, 1), "session_files": len(new_files),
            "foreign_host_status": foreign}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clients", type=int, default=20)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--modes", default="lazy,eager", help="comma-separated: lazy (ours), eager")
    ap.add_argument("--session-lifetime", type=float, default=5.0,
                    help="seconds an unused session lives on the server (Bokeh's default is 15)")
    ap.add_argument("--tiny", action="store_true", help="the tiny demo bundle instead of the real one")
    args = ap.parse_args()
    from workbench._paths import cache_dir

    sessions_dir = cache_dir("sessions")
    rows = [run_mode(m.strip(), args, sessions_dir) for m in args.modes.split(",") if m.strip()]
    table(rows, f"GET / with {args.clients} concurrent clients x {args.rounds} rounds "
                f"({'tiny' if args.tiny else 'real'} demo bundle)")
    by = {r["mode"]: r for r in rows}
    keys = ("errors", "p50_ms", "p95_ms", "rss_growth_mb", "session_files", "foreign_host_status")
    ours = by.get("lazy") or rows[0]
    out = {k: ours[k] for k in keys}
    if "eager" in by and "lazy" in by:
        out["eager"] = {k: by["eager"][k] for k in keys}
        out["p50_speedup"] = round(by["eager"]["p50_ms"] / max(by["lazy"]["p50_ms"], 1e-9), 2)
    summary("app_load", clients=args.clients, rounds=args.rounds, **out)


if __name__ == "__main__":
    main()
