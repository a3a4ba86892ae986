"""App-level benchmark: start ``python app.py`` on loopback, time until it serves, then time ``/classify`` calls.

    python benchmarks/bench_app.py                  # 50 sequential calls with examples/*.jpg[0]
    python benchmarks/bench_app.py --calls 10 --image examples/rose.jpg
    python benchmarks/bench_app.py --server-env OMP_NUM_THREADS=1   # extra environment for the server
    python benchmarks/bench_app.py --plant 3 --calls 20   # /classify_plant with 3 photos against /classify with 1

"ready" is from just before the process is spawned until ``GET /`` answers 200. The app loads its model lazily,
so the first ``/classify`` call (reported on its own, not in the statistics) includes the model load. Each timed
call is what a ``gradio_client`` user sees end to end: upload, queue, inference, Grad-CAM, and downloading the
output images. The server is always terminated at the end, also on errors and Ctrl-C.

``--plant N``: each round times ``/classify`` with the one image and ``/classify_plant`` with N different
photos (examples/*.jpg flowers), back to back, alternating which goes first; it prints both medians and their
ratio (the target for 3 photos: under 2.5x one photo's).

The helpers here (``AppServer``, ``example_images``...) are shared with ``load_test.py``.
"""
from __future__ import annotations

import argparse
import glob
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def example_images() -> list[str]:
    """examples/*.jpg, sorted (the repository ships them; --image names another photo)."""
    found = sorted(glob.glob(str(ROOT / "examples" / "*.jpg")))
    if not found:
        raise SystemExit("no examples/*.jpg: give --image PATH")
    return found


def timed_call(call) -> tuple[float | None, str | None]:
    """(seconds, None) for one call whose answer checks out, else (None, what went wrong)."""
    start = time.perf_counter()
    try:
        result = call()
    except Exception as error:  # noqa: BLE001 - reported by the caller
        return None, f"{type(error).__name__}: {str(error)[:200]}"
    elapsed = time.perf_counter() - start
    problem = check_answer(result)
    return (None, problem) if problem else (elapsed, None)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def percentile(values: list[float], q: float) -> float:
    """Linear-interpolation percentile (numpy's default), without needing numpy."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    position = (len(ordered) - 1) * q / 100.0
    low = int(position)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def parse_env(pairs: list[str]) -> dict:
    env = {}
    for pair in pairs or []:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise SystemExit(f"--server-env wants KEY=VALUE, got {pair!r}")
        env[key] = value
    return env


class AppServer:
    """``python app.py`` on 127.0.0.1 and a free port, in its own process group, output to a log file.

    Use as a context manager; :meth:`stop` ends the whole group (SIGINT, then SIGTERM, then SIGKILL).

    By default the server gets a private, temporary Gradio cache (``GRADIO_TEMP_DIR``), removed at :meth:`stop`.
    Gradio names cached files by content hash and a Gradio server deletes every cache file it created when it
    shuts down, so another Gradio process on the machine (a test run, a dev server) sharing ``/tmp/gradio``
    deletes files this server has just handed out, and clients get ``403`` downloading them. ``shared_cache=True``
    keeps Gradio's default cache, to reproduce exactly that.
    """

    def __init__(self, app: str | os.PathLike = ROOT / "app.py", port: int | None = None,
                 extra_env: dict | None = None, python: str = sys.executable, shared_cache: bool = False):
        self.app = Path(app).resolve()
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.extra_env = dict(extra_env or {})
        self.python = python
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None
        self.ready_s: float | None = None
        self.log = tempfile.NamedTemporaryFile(prefix="flowerdemo-app-", suffix=".log", delete=False)
        self.log_path = self.log.name
        self.cache_dir = None if shared_cache else tempfile.mkdtemp(prefix="flowerdemo-gradio-cache-")

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def start(self, ready_timeout: float = 180.0) -> float:
        """Spawn the app and wait until ``GET /`` is 200; returns seconds from spawn to ready."""
        if not self.app.is_file():
            raise FileNotFoundError(f"{self.app} not found")
        env = dict(os.environ)
        env.update({"GRADIO_SERVER_NAME": "127.0.0.1", "GRADIO_SERVER_PORT": str(self.port),
                    "GRADIO_ANALYTICS_ENABLED": "False", "PYTHONUNBUFFERED": "1"})
        if self.cache_dir:
            env["GRADIO_TEMP_DIR"] = self.cache_dir
        env.update(self.extra_env)
        self.started_at = time.perf_counter()
        self.process = subprocess.Popen([self.python, str(self.app)], cwd=str(self.app.parent), env=env,
                                        stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                        start_new_session=True)
        deadline = self.started_at + ready_timeout
        while time.perf_counter() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"the app exited with code {self.process.returncode} before serving;"
                                   f" log {self.log_path}:\n{self.log_tail()}")
            try:
                with urllib.request.urlopen(self.url, timeout=2) as response:
                    if response.status == 200:
                        self.ready_s = time.perf_counter() - self.started_at
                        return self.ready_s
            except (urllib.error.URLError, ConnectionError, socket.timeout, OSError):
                pass
            time.sleep(0.05)
        raise TimeoutError(f"the app did not answer 200 on {self.url} within {ready_timeout:.0f} s;"
                           f" log {self.log_path}:\n{self.log_tail()}")

    def stop(self, grace: float = 10.0) -> int | None:
        """End the app's process group (only what this object started): SIGINT (Gradio closes cleanly), then
        SIGTERM, then SIGKILL, ``grace`` s apart; returns its exit code. Removes the private cache."""
        process = self.process
        if process is not None:
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
                if process.poll() is not None:
                    break
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(grace)
                except subprocess.TimeoutExpired:
                    continue
        if not self.log.closed:
            self.log.close()
        if self.cache_dir:
            shutil.rmtree(self.cache_dir, ignore_errors=True)
        return None if process is None else process.poll()

    def log_text(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""

    def log_tail(self, lines: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def log_problems(self) -> list[str]:
        """Lines of the server log that look like errors or warnings (tracebacks, ERROR, Warning)."""
        keys = ("Traceback", "ERROR", "Error:", "Exception", "Warning", "WARNING")
        return [line for line in self.log_text().splitlines() if any(key in line for key in keys)]

    def __enter__(self) -> "AppServer":
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def stop_and_report(server: AppServer) -> int | None:
    """Stop the server, print its exit code and any error/warning lines of its log; the log is kept only then."""
    code = server.stop()
    problems = server.log_problems()
    print(f"server stopped (exit code {code}); {len(problems)} error/warning line(s) in its log"
          + (f" {server.log_path}" if problems else ""))
    for line in problems[:10]:
        print(f"  | {line[:200]}")
    if not problems:
        try:
            os.unlink(server.log_path)
        except OSError:
            pass
    return code


def exit_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit, so ``finally`` blocks (which stop the server) run when we are killed."""
    def handler(signum, frame):
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, handler)


def check_answer(result) -> str | None:
    """None if ``/classify``'s first output is a top-k label with a class name, else what is wrong."""
    first = result[0] if isinstance(result, (list, tuple)) and result else result
    if isinstance(first, dict) and first.get("label"):
        return None
    return f"unexpected first output {str(first)[:120]!r}"


_SSL_CONTEXT = None


def shared_ssl_context():
    """One verifying SSL context (certifi's CA bundle, as httpx's default), built once for every client.

    gradio_client hands ``ssl_verify`` to each of its httpx calls, and given ``True`` httpx builds a new SSL
    context for every request, loading the whole CA bundle even for plain http (a known httpx cost, e.g.
    Aiven-Open/astacus#204). httpx also takes a ready ``ssl.SSLContext`` there: verification stays on, built once.
    """
    global _SSL_CONTEXT
    if _SSL_CONTEXT is None:
        import ssl

        import certifi

        _SSL_CONTEXT = ssl.create_default_context(cafile=certifi.where())
    return _SSL_CONTEXT


def make_client(url: str, download_dir: str | None, reuse_ssl_context: bool = False):
    from gradio_client import Client

    extra = {"ssl_verify": shared_ssl_context()} if reuse_ssl_context else {}
    return Client(url, verbose=False, download_files=download_dir if download_dir else False,
                  analytics_enabled=False, **extra)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", "-n", type=int, default=50, help="timed sequential /classify calls (default 50)")
    parser.add_argument("--image", default=None, help="image to send (default: the first examples/*.jpg)")
    parser.add_argument("--opacity", type=float, default=0.5)
    parser.add_argument("--app", default=str(ROOT / "app.py"), help="the app script (default: app.py)")
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--no-download", action="store_true",
                        help="do not download output images (default: download, as a real client does)")
    parser.add_argument("--reuse-ssl-context", action="store_true",
                        help="give the client one verifying SSL context instead of letting httpx build one per "
                             "request (see shared_ssl_context); default: gradio_client as it comes")
    parser.add_argument("--server-env", action="append", metavar="KEY=VALUE",
                        help="extra environment for the server, e.g. OMP_NUM_THREADS=1 (repeatable)")
    parser.add_argument("--plant", type=int, default=0, metavar="N",
                        help="also time /classify_plant with N photos against /classify, back to back (1-5)")
    parser.add_argument("--shared-cache", action="store_true",
                        help="let the server use Gradio's shared /tmp/gradio cache (default: a private one)")
    args = parser.parse_args(argv)
    if args.calls < 1:
        parser.error("--calls must be at least 1")
    images = [args.image] if args.image else example_images()
    if not images or not os.path.isfile(images[0]):
        parser.error("no image: pass --image or add examples/*.jpg")
    image = images[0]
    extra_env = parse_env(args.server_env)
    if args.plant:
        if not 1 <= args.plant <= 5:
            parser.error("--plant takes 1 to 5 photos")
        flowers = [p for p in example_images() if "not_a_flower" not in Path(p).name]
        if len(flowers) < args.plant:
            parser.error(f"--plant {args.plant} needs that many example photos; found {len(flowers)}")
        plant_photos = flowers[:args.plant]

    from gradio_client import handle_file

    exit_on_sigterm()
    server = AppServer(args.app, extra_env=extra_env, shared_cache=args.shared_cache)
    with tempfile.TemporaryDirectory(prefix="flowerdemo-bench-") as downloads:
        try:
            print(f"starting {server.app} on {server.url}" + (f" with {extra_env}" if extra_env else ""))
            ready = server.start(args.ready_timeout)
            print(f"ready (spawn -> GET / 200)           {ready:8.2f} s")
            start = time.perf_counter()
            client = make_client(server.url, None if args.no_download else downloads, args.reuse_ssl_context)
            print(f"client connect                       {(time.perf_counter() - start) * 1e3:8.0f} ms")

            start = time.perf_counter()
            result = client.predict(handle_file(image), args.opacity, api_name="/classify")
            first = time.perf_counter() - start
            problem = check_answer(result)
            if problem:
                print(f"first call returned a bad answer: {problem}")
                return 1
            print(f"first /classify (lazy model load)    {first * 1e3:8.0f} ms   -> {result[0]['label']!r}")

            if args.plant:
                return time_plant(client, image, plant_photos, args)

            times, errors = [], []
            for _ in range(args.calls):
                elapsed, problem = timed_call(lambda: client.predict(handle_file(image), args.opacity,
                                                                     api_name="/classify"))
                if problem:
                    errors.append(problem)
                else:
                    times.append(elapsed)
            print(f"image {image}, {args.calls} sequential calls, download outputs: {not args.no_download}, "
                  f"SSL context: {'one, reused' if args.reuse_ssl_context else 'gradio_client default (one per request)'}")
            if times:
                print(f"/classify end to end                 median {statistics.median(times) * 1e3:7.0f} ms   "
                      f"p95 {percentile(times, 95) * 1e3:7.0f} ms   min {min(times) * 1e3:7.0f} ms   "
                      f"max {max(times) * 1e3:7.0f} ms")
            print(f"errors                               {len(errors)}")
            for message in errors[:5]:
                print(f"  {message}")
            return 1 if errors else 0
        finally:
            stop_and_report(server)

def time_plant(client, image: str, photos: list[str], args) -> int:
    """``--plant``: rounds of one /classify and one /classify_plant call, back to back, alternating which runs
    first (so neither always finds the server warm from the other); medians and their ratio."""
    from gradio_client import handle_file

    def one():
        return client.predict(handle_file(image), args.opacity, api_name="/classify")

    def plant():
        return client.predict([handle_file(p) for p in photos], args.opacity, api_name="/classify_plant")

    problem = check_answer(plant())  # warm-up, not timed
    if problem:
        print(f"first /classify_plant returned a bad answer: {problem}")
        return 1
    times = {"classify": [], "classify_plant": []}
    errors = []
    for round_ in range(args.calls):
        order = [("classify", one), ("classify_plant", plant)]
        for name, call in (order if round_ % 2 == 0 else order[::-1]):
            elapsed, problem = timed_call(call)
            if problem:
                errors.append(f"{name}: {problem}")
            else:
                times[name].append(elapsed)
    print(f"{args.calls} rounds, back to back: /classify with {Path(image).name}, /classify_plant with "
          f"{len(photos)} photos ({', '.join(Path(p).name for p in photos)})")
    for name, values in times.items():
        if values:
            print(f"/{name:<15} median {statistics.median(values) * 1e3:7.0f} ms   p95 "
                  f"{percentile(values, 95) * 1e3:7.0f} ms   min {min(values) * 1e3:7.0f} ms")
    if times["classify"] and times["classify_plant"]:
        ratio = statistics.median(times["classify_plant"]) / statistics.median(times["classify"])
        print(f"ratio /classify_plant ({len(photos)} photos) / /classify (1 photo): {ratio:.2f}x")
    print(f"errors                               {len(errors)}")
    for message in errors[:5]:
        print(f"  {message}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
