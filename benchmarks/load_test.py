"""Bounded load test of the flower app's ``/classify`` endpoint, on loopback only.

Why: the demo runs on a 2-core CPU box (a Hugging Face Space or the dev machine). This checks that concurrent
users get answers -- no errors, no requests lost in the queue -- and shows what they wait and how much memory the
server takes under load, so queue and concurrency settings (``FLOWERDEMO_CONCURRENCY``,
``FLOWERDEMO_QUEUE_SIZE``) can be chosen from numbers. It is bounded (``--requests`` and ``--time-limit``) and
refuses any host but loopback, so it can never turn into a load generator against someone else's server.

How to run (from the repository root; needs ``pip install psutil``):

    python benchmarks/load_test.py                               # starts app.py itself; 16 users, 500 requests
    python benchmarks/load_test.py --users 4 --requests 20       # a quick smoke run
    python benchmarks/load_test.py --url http://127.0.0.1:7860/  # an app already running on this machine
    python benchmarks/load_test.py --server-env FLOWERDEMO_CONCURRENCY=1 --server-env OMP_NUM_THREADS=1

Each user is a thread with its own ``gradio_client.Client``; together they send ``--requests`` calls of
``/classify``, rotating over ``examples/*.jpg``. After ``--time-limit`` seconds no new request is submitted and
in-flight ones get up to ``--request-timeout`` seconds to finish. Prints throughput, median/p95 latency, errors
(with the first messages), lost requests (submitted - answered - errored; a request that never came back within
``--request-timeout`` is lost) and the peak RSS of the server process and its children (sampled every 0.2 s).
Exit code 1 if anything errored or was lost.
"""
from __future__ import annotations

import argparse
import collections
import ipaddress
import os
import statistics
import sys
import tempfile
import threading
import time
import urllib.parse
from concurrent.futures import TimeoutError as FutureTimeoutError
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_app import (ROOT, AppServer, check_answer, example_images, exit_on_sigterm, make_client,  # noqa: E402
                       parse_env, percentile, stop_and_report)

try:
    import psutil
except ImportError:  # pragma: no cover - a clear message beats a traceback
    raise SystemExit("load_test.py needs psutil: pip install psutil (it is in requirements-dev.txt)") from None


def loopback_url(url: str) -> str:
    """The URL if it points at this machine's loopback interface; otherwise SystemExit (names are not resolved)."""
    parts = urllib.parse.urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise SystemExit(f"--url must be http://127.0.0.1:PORT/, got {url!r}")
    host = parts.hostname
    if host != "localhost":
        try:
            if not ipaddress.ip_address(host).is_loopback:
                raise ValueError
        except ValueError:
            raise SystemExit(f"refusing {url!r}: this load test only targets loopback (127.0.0.1, ::1, localhost)") from None
    return url if url.endswith("/") else url + "/"


def listening_pid(port: int) -> int | None:
    """The pid listening on a local TCP port, if this user may see it."""
    try:
        for conn in psutil.net_connections(kind="tcp"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return conn.pid
    except (psutil.AccessDenied, PermissionError):
        pass
    return None


def process_tree(pid: int, descendants: bool = True) -> list:
    """A process and (unless told otherwise) its live descendants."""
    root = psutil.Process(pid)
    return [root] + (root.children(recursive=True) if descendants else [])


def cpu_seconds(pid: int, descendants: bool = True) -> float:
    """User + system CPU seconds used so far by a process (and its live descendants)."""
    total = 0.0
    for process in process_tree(pid, descendants):
        try:
            times = process.cpu_times()
            total += times.user + times.system
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            pass
    return total


class RssSampler(threading.Thread):
    """Peak of the summed RSS of a process and all its descendants, sampled every ``interval`` s."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0
        self.samples = 0
        self.first = None
        self._halt = threading.Event()

    def sample(self) -> int:
        total = 0
        for process in process_tree(self.pid):
            try:
                total += process.memory_info().rss
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                pass
        return total

    def run(self) -> None:
        while not self._halt.is_set():
            try:
                rss = self.sample()
            except (psutil.NoSuchProcess, psutil.AccessDenied):
                return
            self.first = rss if self.first is None else self.first
            self.peak = max(self.peak, rss)
            self.samples += 1
            self._halt.wait(self.interval)

    def stop(self) -> None:
        self._halt.set()
        self.join(2)


class LoadRun:
    """Shared counters of one run; every update happens under one lock, and none after :meth:`close`."""

    def __init__(self, total: int, deadline: float):
        self.total, self.deadline = total, deadline
        self.lock = threading.Lock()
        self.submitted = self.answered = self.errored = self.timed_out = 0
        self.latencies: list[float] = []
        self.errors: collections.Counter = collections.Counter()
        self.setup_errors: list[str] = []
        self.closed = False
        self.last_answer = None
        self.t0 = None

    def ticket(self) -> int | None:
        with self.lock:
            if self.closed or self.submitted >= self.total or time.perf_counter() >= self.deadline:
                return None
            self.submitted += 1
            return self.submitted - 1

    def record(self, latency: float | None = None, error: str | None = None, timed_out: bool = False) -> None:
        with self.lock:
            if self.closed:
                return
            if timed_out:
                self.timed_out += 1
            elif error is not None:
                self.errored += 1
                self.errors[error] += 1
            else:
                self.answered += 1
                self.latencies.append(latency)
                self.last_answer = time.perf_counter()

    def close(self) -> dict:
        with self.lock:
            self.closed = True
            return {"submitted": self.submitted, "answered": self.answered, "errored": self.errored,
                    "timed_out": self.timed_out, "latencies": list(self.latencies), "errors": self.errors.copy(),
                    "setup_errors": list(self.setup_errors), "last_answer": self.last_answer}


def user(run: LoadRun, url: str, images: list[str], opacity: float, request_timeout: float,
         download_dir: str | None, barrier: threading.Barrier, reuse_ssl_context: bool = False) -> None:
    from gradio_client import handle_file

    client = None
    try:
        client = make_client(url, download_dir, reuse_ssl_context)
    except Exception as error:  # noqa: BLE001 - reported as a setup error
        with run.lock:
            run.setup_errors.append(f"{type(error).__name__}: {str(error)[:200]}")
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        pass
    if client is None:
        return
    try:
        while (ticket := run.ticket()) is not None:
            image = images[ticket % len(images)]
            start = time.perf_counter()
            job = None
            try:
                job = client.submit(handle_file(image), opacity, api_name="/classify")
                result = job.result(timeout=request_timeout)
            except (FutureTimeoutError, TimeoutError):
                run.record(timed_out=True)  # never answered: lost
                job.cancel()
                continue
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                run.record(error=f"{type(error).__name__}: {str(error).strip()[:200]}")
                continue
            elapsed = time.perf_counter() - start
            problem = check_answer(result)
            run.record(error=f"bad answer: {problem}") if problem else run.record(latency=elapsed)
    finally:
        client.close()


def print_cpu_share(cpu_used: tuple[float, float], answered: int, wall: float) -> None:
    """Where the cores went: the server's CPU time per answer, and how much this load generator took itself.

    The generator runs on the same machine, so the measured throughput is what is left to the server; the
    server's CPU per answer says what it would serve with the cores to itself (an estimate, not a measurement).
    """
    server, generator = cpu_used
    cores = os.cpu_count() or 1
    print(f"CPU over the run: server {server:.1f} s, this load generator {generator:.1f} s "
          f"({server / wall:.2f} and {generator / wall:.2f} of {cores} cores)")
    if answered:
        per_answer = server / answered
        print(f"server CPU per answer {per_answer * 1e3:.0f} ms: with all {cores} cores to itself, at most about "
              f"{cores / per_answer:.1f} req/s (an estimate)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default=None, help="a running app on loopback (default: start app.py)")
    parser.add_argument("--server-pid", type=int, default=None,
                        help="with --url: the server pid for RSS (default: whoever listens on the port)")
    parser.add_argument("--users", type=int, default=16, help="concurrent users (default 16)")
    parser.add_argument("--requests", type=int, default=500, help="requests in total (default 500)")
    parser.add_argument("--time-limit", type=float, default=600.0,
                        help="seconds after which no new request is submitted (default 600)")
    parser.add_argument("--request-timeout", type=float, default=120.0,
                        help="seconds one request may take before it counts as lost (default 120)")
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument("--images", nargs="+", default=None, help="images to rotate over (default examples/*.jpg)")
    parser.add_argument("--no-download", action="store_true", help="do not download output images")
    parser.add_argument("--app", default=str(ROOT / "app.py"), help="the app script to start (default app.py)")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--reuse-ssl-context", action="store_true",
                        help="each client gets one verifying SSL context instead of httpx building one per request "
                             "(bench_app.shared_ssl_context); default: gradio_client as it comes")
    parser.add_argument("--server-env", action="append", metavar="KEY=VALUE",
                        help="extra environment for a started server, e.g. FLOWERDEMO_CONCURRENCY=1 (repeatable)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="let a started server use Gradio's shared /tmp/gradio cache (default: a private one)")
    args = parser.parse_args(argv)
    if args.users < 1 or args.requests < 1 or args.time_limit <= 0 or args.request_timeout <= 0:
        parser.error("--users, --requests, --time-limit and --request-timeout must be positive")
    images = args.images or example_images()
    missing = [image for image in images if not os.path.isfile(image)]
    if not images or missing:
        parser.error(f"no usable images ({', '.join(missing) or 'examples/*.jpg is empty'})")

    exit_on_sigterm()
    server = None
    if args.url:
        if args.server_env or args.shared_cache:
            parser.error("--server-env and --shared-cache only apply to a server this script starts (no --url)")
        url = loopback_url(args.url)
        server_pid = args.server_pid or listening_pid(urllib.parse.urlsplit(url).port or 80)
    else:
        server = AppServer(args.app, extra_env=parse_env(args.server_env), shared_cache=args.shared_cache)
    sampler = None
    try:
        if server:
            print(f"starting {server.app} on {server.url}" + (f" with {server.extra_env}" if server.extra_env else ""))
            print(f"ready in {server.start(args.ready_timeout):.2f} s")
            url, server_pid = server.url, server.pid
        # The app loads its model on first use: one untimed call first, so the run measures a warm server.
        from gradio_client import handle_file

        start = time.perf_counter()
        warm = make_client(url, None)
        try:
            problem = check_answer(warm.predict(handle_file(images[0]), args.opacity, api_name="/classify"))
        finally:
            warm.close()
        print(f"warm-up call {time.perf_counter() - start:.2f} s" + (f" ({problem})" if problem else ""))
        if server_pid:
            sampler = RssSampler(server_pid)
            rss_idle = sampler.sample()
            sampler.start()
            cpu_start = (cpu_seconds(server_pid), cpu_seconds(os.getpid(), descendants=False))  # it spawned the server
        print(f"load: {args.users} users, {args.requests} requests, time limit {args.time_limit:.0f} s, "
              f"{len(images)} image(s), download outputs: {not args.no_download}, target {url}, "
              f"SSL context: {'one, reused' if args.reuse_ssl_context else 'one per request (default)'}")

        with tempfile.TemporaryDirectory(prefix="flowerdemo-load-") as downloads:
            run = LoadRun(args.requests, deadline=float("inf"))

            def go() -> None:  # runs once, when every user has connected (or failed to)
                run.t0 = time.perf_counter()
                run.deadline = run.t0 + args.time_limit

            barrier = threading.Barrier(args.users + 1, action=go)
            started = time.perf_counter()
            threads = [threading.Thread(target=user, daemon=True, name=f"user-{i}",
                                        args=(run, url, images, args.opacity, args.request_timeout,
                                              None if args.no_download else downloads, barrier,
                                              args.reuse_ssl_context))
                       for i in range(args.users)]
            for thread in threads:
                thread.start()
            try:
                barrier.wait(timeout=300)
            except threading.BrokenBarrierError:
                with run.lock:
                    go()
            t0 = run.t0
            print(f"{args.users} clients connected in {t0 - started:.2f} s")
            end_by = run.deadline + args.request_timeout + 30
            for thread in threads:
                thread.join(max(0.0, end_by - time.perf_counter()))
            stuck = sum(thread.is_alive() for thread in threads)
            stats = run.close()
            if sampler:
                cpu_used = (cpu_seconds(server_pid) - cpu_start[0],
                            cpu_seconds(os.getpid(), descendants=False) - cpu_start[1])
            wall = (stats["last_answer"] or time.perf_counter()) - t0
    finally:
        try:
            if sampler:
                sampler.stop()
        finally:
            if server:
                stop_and_report(server)

    latencies = stats["latencies"]
    lost = stats["submitted"] - stats["answered"] - stats["errored"]
    print()
    print(f"submitted {stats['submitted']}   answered {stats['answered']}   errors {stats['errored']}   "
          f"lost {lost} (timed out {stats['timed_out']}, users still stuck {stuck})")
    if stats["submitted"] < args.requests:
        print(f"  (time limit reached: {args.requests - stats['submitted']} request(s) never submitted)")
    if latencies:
        print(f"throughput {stats['answered'] / wall:.2f} req/s over {wall:.1f} s")
        print(f"latency    median {statistics.median(latencies) * 1e3:.0f} ms   p95 {percentile(latencies, 95) * 1e3:.0f} ms"
              f"   min {min(latencies) * 1e3:.0f} ms   max {max(latencies) * 1e3:.0f} ms")
    if sampler:
        print(f"server RSS (pid {server_pid} + children): idle {rss_idle / 2**20:.0f} MiB, "
              f"peak {sampler.peak / 2**20:.0f} MiB ({sampler.samples} samples)")
        print_cpu_share(cpu_used, stats["answered"], wall)
    else:
        print("server RSS: unknown (server pid not found; pass --server-pid)")
    for message in stats["setup_errors"][:5]:
        print(f"  client setup error: {message}")
    for message, count in stats["errors"].most_common(5):
        print(f"  error x{count}: {message}")
    failed = stats["errored"] or lost or stats["setup_errors"]
    print("FAIL" if failed else "OK")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
