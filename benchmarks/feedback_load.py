"""Load and crash test of "Is this right?" saves: the real app on loopback, many clients, then the store on disk.

    python benchmarks/feedback_load.py --clients 16 --saves 50 --dir /tmp/fb-load          # 800 saves
    python benchmarks/feedback_load.py --clients 16 --saves 50 --dir /tmp/fb-kill --kill   # SIGKILL mid-run

Starts ``python app.py`` (``bench_app.AppServer``) with ``FLOWERDEMO_FEEDBACK_DIR=DIR``. Each client is a thread
with its own ``gradio_client.Client`` (one session), and saves its photos the way the page does: ``/classify``
the photo, then ``/feedback`` (label, label_kind) for that answer. The photos are synthesised and all distinct:
the examples with a few pixels set to the save's number, every ``--gps-every``-th one a JPEG carrying a GPS EXIF
tag, the rest PNG. Labels rotate over a known species, another species (free text with HTML and a
right-to-left mark) and not a flower. The per-session limit on saves a minute is lifted for the run
(``FLOWERDEMO_FEEDBACK_PER_MINUTE``): each client here is one session saving far faster than a person.

Then it checks DIR itself, reading every ``data/*/metadata.jsonl`` line by line and every photo: records,
lost (answered "saved" but not on disk), corrupt (a line that is not a record, a photo that does not decode),
duplicates (two records of one photo), photos with EXIF or bytes after the JPEG's end, photos without a record,
records without a photo; and that each stored record is the photo that was sent (its pixel hash, computed
here the way the store does) with the label given. Prints the p95 of a save (``/feedback`` alone, as the
client sees it). Exit code 1 if any check fails.

``--kill``: the same run, but the server's process group gets SIGKILL once a random share (20-80 %) of the saves
has been answered, after a further random 0-300 ms, so the kill lands inside saves in flight. Clients stop
at the first failure. The server is started again on DIR, one more photo is saved through it, and DIR is checked:
every save answered "saved" must be there and readable, and nothing else half there (a photo without its
record; a hidden ``.part`` file of an interrupted write is counted and reported, as readers never see one).
DIR must be empty or absent (the checks count exactly what this run saved).
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from concurrent.futures import TimeoutError as FutureTimeoutError
from dataclasses import dataclass, field
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench_app import (ROOT, AppServer, example_images, exit_on_sigterm, make_client, percentile,  # noqa: E402
                       stop_and_report)

GPS_INFO = 0x8825
PIXELS_MARKED = 24  # bits of the save's number written into the first row: every photo distinct


# ---------------------------------------------------------------------------------------------------- photos


@dataclass(frozen=True)
class Planned:
    """One save: the photo sent, what it is labelled, and the record id the store must give it."""

    number: int
    path: str
    label: str
    label_kind: str
    expected_id: str
    gps: bool


def marked_photo(base, number: int):
    """``base`` with its first row's first pixels set to the bits of ``number`` (black or white)."""
    image = base.copy()
    pixels = image.load()
    for bit in range(min(PIXELS_MARKED, image.width)):
        pixels[bit, 0] = (255, 255, 255) if number >> bit & 1 else (0, 0, 0)
    return image


def write_photo(image, path: Path, gps: bool) -> None:
    """A JPEG with a GPS position in its EXIF, or a PNG."""
    from PIL import ExifTags, Image

    if not gps:
        image.save(path, format="PNG")
        return
    exif = Image.Exif()
    exif[ExifTags.Base.Make] = "flowerdemo benchmark"
    position = exif.get_ifd(ExifTags.IFD.GPSInfo)
    position.update({ExifTags.GPS.GPSLatitudeRef: "N", ExifTags.GPS.GPSLatitude: (48.0, 51.0, 24.0),
                     ExifTags.GPS.GPSLongitudeRef: "E", ExifTags.GPS.GPSLongitude: (2.0, 21.0, 3.0)})
    image.save(path, format="JPEG", quality=95, exif=exif.tobytes())


def label_for(number: int, class_names: tuple) -> tuple[str, str]:
    """(label, label_kind) for save ``number``: the three kinds in turn, as the words /feedback takes."""
    from flowerdemo.feedback import LabelKind

    kind = tuple(LabelKind)[number % 3]
    if kind is LabelKind.KNOWN:
        return class_names[number % len(class_names)], kind.value
    if kind is LabelKind.OTHER:
        return f"<b>wild</b> orchid \u200f{number}", kind.value
    return "not a flower", kind.value


def plan_saves(folder: Path, total: int, gps_every: int, class_names: tuple) -> list[Planned]:
    """``total`` distinct photos in ``folder``, each with its label and the record id the store will give it
    (the SHA-256 of its decoded pixels, computed with the store's own function on the app's own decoder)."""
    from flowerdemo.feedback import encode_photo
    from flowerdemo.core.preprocess import load_image

    bases = [load_image(path) for path in example_images()]
    planned = []
    for number in range(total):
        gps = gps_every > 0 and number % gps_every == 0
        path = folder / f"{number:05d}.{'jpg' if gps else 'png'}"
        write_photo(marked_photo(bases[number % len(bases)], number), path, gps)
        label, kind = label_for(number, class_names)
        planned.append(Planned(number, str(path), label, kind, encode_photo(load_image(path)).sha256, gps))
    ids = [save.expected_id for save in planned]
    if len(set(ids)) != len(ids):
        raise SystemExit("the synthesised photos are not all distinct (same pixels twice); this is a bug here")
    return planned


def expected_label(save: Planned) -> str:
    """What the store keeps of the label (it cleans free text: the right-to-left mark goes)."""
    from flowerdemo.feedback import check_label

    return check_label(save.label, save.label_kind, ())


# ---------------------------------------------------------------------------------------------------- clients


@dataclass
class Outcomes:
    """Every client's results, under one lock."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    saved: dict = field(default_factory=dict)  # save number -> the record /feedback answered
    refused: dict = field(default_factory=dict)  # save number -> the app's message
    unanswered: dict = field(default_factory=dict)  # save number -> what the client saw (kill, timeout)
    save_seconds: list = field(default_factory=list)
    classify_seconds: list = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    saving_now: int = 0  # /feedback calls sent and not yet answered (the killer aims at one of them)

    def answered(self) -> int:
        with self.lock:
            return len(self.saved) + len(self.refused)


def call(client, timeout: float, *args, api_name: str):
    job = client.submit(*args, api_name=api_name)
    try:
        return job.result(timeout=timeout)
    except (FutureTimeoutError, TimeoutError):
        job.cancel()
        raise


def client_run(url: str, saves: list[Planned], outcomes: Outcomes, barrier: threading.Barrier, timeout: float,
               reuse_ssl_context: bool) -> None:
    from gradio_client import handle_file

    client = None
    try:
        client = make_client(url, None, reuse_ssl_context)
    finally:
        try:
            barrier.wait(timeout=300)
        except threading.BrokenBarrierError:
            pass
    try:
        for save in saves:
            if outcomes.stop.is_set():
                return
            stage = "classify"
            try:
                start = time.perf_counter()
                call(client, timeout, handle_file(save.path), 0.5, api_name="/classify")
                classified = time.perf_counter()
                stage = "feedback"
                with outcomes.lock:
                    outcomes.saving_now += 1
                try:
                    record = call(client, timeout, save.label, save.label_kind, api_name="/feedback")
                finally:
                    with outcomes.lock:
                        outcomes.saving_now -= 1
                done = time.perf_counter()
            except Exception as error:  # noqa: BLE001 - every failure is counted and reported
                message = f"{stage}: {type(error).__name__}: {str(error).strip()[:160]}"
                with outcomes.lock:
                    if stage == "feedback" and type(error).__name__ == "AppError":
                        outcomes.refused[save.number] = message
                    else:
                        outcomes.unanswered[save.number] = message
                if outcomes.stop.is_set() or stage == "classify":
                    return  # the server is gone (or refusing photos): this client stops
                continue
            with outcomes.lock:
                outcomes.saved[save.number] = record
                outcomes.classify_seconds.append(classified - start)
                outcomes.save_seconds.append(done - classified)
    finally:
        if client is not None:
            client.close()


def run_clients(url: str, planned: list[Planned], clients: int, timeout: float, reuse_ssl_context: bool,
                killer=None) -> tuple[Outcomes, float]:
    outcomes = Outcomes()
    per_client = [planned[index::clients] for index in range(clients)]
    barrier = threading.Barrier(clients + 1)
    threads = [threading.Thread(target=client_run, name=f"client-{index}", daemon=True,
                                args=(url, saves, outcomes, barrier, timeout, reuse_ssl_context))
               for index, saves in enumerate(per_client)]
    for thread in threads:
        thread.start()
    try:
        barrier.wait(timeout=300)
    except threading.BrokenBarrierError:
        pass
    start = time.perf_counter()
    if killer is not None:
        threading.Thread(target=killer, args=(outcomes,), name="killer", daemon=True).start()
    for thread in threads:
        thread.join()
    return outcomes, time.perf_counter() - start


# ---------------------------------------------------------------------------------------------------- the store on disk


def inspect_store(root: Path) -> dict:
    """What DIR holds, read directly (not through the store's reader, which skips what it cannot use)."""
    from PIL import Image

    from flowerdemo.feedback import DATA_DIR, METADATA_FILE, PART_SUFFIX

    lines = corrupt_lines = 0
    records: dict = {}  # record id -> record
    duplicates = 0
    bad_photos: list[str] = []
    with_exif: list[str] = []
    trailing: list[str] = []
    orphans: list[str] = []
    missing: list[str] = []
    parts: list[str] = []
    for folder in sorted(p for p in (root / DATA_DIR).iterdir() if p.is_dir()) if (root / DATA_DIR).is_dir() else []:
        names = set()
        metadata = folder / METADATA_FILE
        if metadata.is_file():
            for line in metadata.read_text(encoding="utf-8").splitlines():
                if not line.strip():
                    continue
                lines += 1
                try:
                    record = json.loads(line)
                except json.JSONDecodeError:
                    corrupt_lines += 1
                    continue
                if not isinstance(record, dict) or not isinstance(record.get("file_name"), str):
                    corrupt_lines += 1
                    continue
                record_id = Path(record["file_name"]).stem
                duplicates += record_id in records
                records[record_id] = {**record, "folder": folder.name}
                names.add(record["file_name"])
                if not (folder / record["file_name"]).is_file():
                    missing.append(f"{folder.name}/{record['file_name']}")
        for path in folder.iterdir():
            if path.name.endswith(PART_SUFFIX):
                parts.append(f"{folder.name}/{path.name}")
            elif path.suffix == ".jpg":
                if path.name not in names:
                    orphans.append(f"{folder.name}/{path.name}")
                problem = photo_problem(path, Image)
                if problem == "unreadable":
                    bad_photos.append(path.name)
                elif problem == "exif":
                    with_exif.append(path.name)
                elif problem == "trailing":
                    trailing.append(path.name)
    return {"lines": lines, "corrupt_lines": corrupt_lines, "records": records, "duplicates": duplicates,
            "bad_photos": bad_photos, "with_exif": with_exif, "trailing": trailing, "orphans": orphans,
            "missing": missing, "parts": parts}


def photo_problem(path: Path, Image) -> str | None:
    """None for a clean JPEG; else "unreadable", "exif" (any EXIF, GPS or not) or "trailing" (bytes after EOI)."""
    data = path.read_bytes()
    try:
        with Image.open(path) as photo:
            photo.load()
            if photo.format != "JPEG":
                return "unreadable"
            if photo.getexif() or "exif" in photo.info or photo.getexif().get_ifd(GPS_INFO):
                return "exif"
    except (OSError, SyntaxError, ValueError):
        return "unreadable"
    return None if data.endswith(b"\xff\xd9") else "trailing"


def check_answered(inspected: dict, planned: list[Planned], outcomes: Outcomes) -> dict:
    """Saves answered "saved" that are not on disk, or not as answered (other photo, other label)."""
    by_number = {save.number: save for save in planned}
    lost, wrong = [], []
    for number, answer in outcomes.saved.items():
        save = by_number[number]
        record = inspected["records"].get(save.expected_id)
        if record is None or answer.get("record_id") != save.expected_id:
            lost.append(number)
        elif (record["label"], record["label_kind"]) != (expected_label(save), save.label_kind):
            wrong.append(number)
    return {"lost": lost, "wrong": wrong}


def report_store(inspected: dict, answered: dict, expected_records: int | None) -> list[str]:
    """Print the store's figures; the list of failed checks."""
    records = len(inspected["records"])
    print(f"on disk: {records} records ({inspected['lines']} metadata lines), "
          f"{len(answered['lost'])} lost, {inspected['corrupt_lines']} corrupt lines, "
          f"{len(inspected['bad_photos'])} unreadable photos, {inspected['duplicates']} duplicates, "
          f"{len(answered['wrong'])} with another label than answered")
    print(f"         {len(inspected['with_exif'])} photos with EXIF, {len(inspected['trailing'])} with bytes after "
          f"the JPEG end, {len(inspected['orphans'])} photos without a record, {len(inspected['missing'])} records "
          f"without a photo, {len(inspected['parts'])} hidden .part files")
    failures = []
    if expected_records is not None and records != expected_records:
        failures.append(f"{records} records, expected {expected_records}")
    for key in ("lost", "wrong"):
        if answered[key]:
            failures.append(f"{len(answered[key])} {key}: saves {answered[key][:5]}")
    for key in ("bad_photos", "with_exif", "trailing", "orphans", "missing"):
        if inspected[key]:
            failures.append(f"{len(inspected[key])} {key}: {inspected[key][:3]}")
    if inspected["corrupt_lines"] or inspected["duplicates"]:
        failures.append(f"{inspected['corrupt_lines']} corrupt lines, {inspected['duplicates']} duplicates")
    return failures


def report_clients(outcomes: Outcomes, wall: float) -> None:
    saves = outcomes.save_seconds
    print(f"answered: {len(outcomes.saved)} saved, {len(outcomes.refused)} refused, "
          f"{len(outcomes.unanswered)} unanswered, in {wall:.1f} s")
    if saves:
        print(f"/feedback (a save)  median {statistics.median(saves) * 1e3:6.0f} ms   p95 "
              f"{percentile(saves, 95) * 1e3:6.0f} ms   max {max(saves) * 1e3:6.0f} ms   ({len(saves)} saves)")
        classify = outcomes.classify_seconds
        print(f"/classify (before)  median {statistics.median(classify) * 1e3:6.0f} ms   p95 "
              f"{percentile(classify, 95) * 1e3:6.0f} ms")
    for message, count in collections.Counter(outcomes.refused.values()).most_common(3):
        print(f"  refused x{count}: {message}")
    for message, count in collections.Counter(outcomes.unanswered.values()).most_common(3):
        print(f"  unanswered x{count}: {message}")


# ---------------------------------------------------------------------------------------------------- runs


def server_env(folder: Path) -> dict:
    """The app's settings for the run, as environment variables (app.py reads them into Settings)."""
    return {"FLOWERDEMO_FEEDBACK": "on", "FLOWERDEMO_FEEDBACK_DIR": str(folder),
            "FLOWERDEMO_FEEDBACK_PER_MINUTE": "1000000", "FLOWERDEMO_FEEDBACK_REPO": ""}


def warm_up(url: str, reuse_ssl_context: bool, timeout: float) -> None:
    """One /classify first: the app loads its model on first use, and the run should time a warm server."""
    from gradio_client import handle_file

    client = make_client(url, None, reuse_ssl_context)
    try:
        call(client, timeout, handle_file(example_images()[0]), 0.5, api_name="/classify")
    finally:
        client.close()


def kill_at_random(server: AppServer, total: int, rng: random.Random):
    """A killer for run_clients: SIGKILL to the server's group once a random share of the saves is answered and
    a save has just been sent, a random 0-100 ms after it (most of a client's time goes to /classify: a kill at
    any moment would mostly miss the saves)."""
    target = rng.randint(max(1, total // 5), max(1, total * 4 // 5))
    delay = rng.uniform(0.0, 0.1)
    moment = {}

    def killer(outcomes: Outcomes) -> None:
        while outcomes.answered() < target and not outcomes.stop.is_set():
            time.sleep(0.005)
        deadline = time.perf_counter() + 60
        while outcomes.saving_now == 0 and time.perf_counter() < deadline:
            time.sleep(0.001)
        time.sleep(delay)
        moment.update(answered=outcomes.answered(), target=target, delay=delay, saving=outcomes.saving_now)
        outcomes.stop.set()
        try:
            os.killpg(server.process.pid, signal.SIGKILL)  # only the group this script started
        except ProcessLookupError:
            pass

    return killer, moment


def save_one_more(url: str, save: Planned, reuse_ssl_context: bool, timeout: float) -> dict:
    from gradio_client import handle_file

    client = make_client(url, None, reuse_ssl_context)
    try:
        call(client, timeout, handle_file(save.path), 0.5, api_name="/classify")
        return call(client, timeout, save.label, save.label_kind, api_name="/feedback")
    finally:
        client.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=16, help="concurrent clients (default 16)")
    parser.add_argument("--saves", type=int, default=50, help="photos each client saves (default 50)")
    parser.add_argument("--dir", required=True, help="the feedback folder (empty or absent); kept afterwards")
    parser.add_argument("--kill", action="store_true", help="SIGKILL the server mid-run, restart it, check")
    parser.add_argument("--gps-every", type=int, default=4, help="every N-th photo is a JPEG with GPS EXIF (4)")
    parser.add_argument("--seed", type=int, default=None, help="for the kill moment (default: random)")
    parser.add_argument("--request-timeout", type=float, default=180.0)
    parser.add_argument("--ready-timeout", type=float, default=180.0)
    parser.add_argument("--app", default=str(ROOT / "app.py"))
    parser.add_argument("--reuse-ssl-context", action="store_true",
                        help="one verifying SSL context for every client (bench_app.shared_ssl_context)")
    args = parser.parse_args(argv)
    if args.clients < 1 or args.saves < 1:
        parser.error("--clients and --saves must be at least 1")
    root = Path(args.dir).resolve()
    if root.exists() and any(root.iterdir()):
        parser.error(f"{root} is not empty: give an empty or new folder (the checks count what this run saved)")
    root.mkdir(parents=True, exist_ok=True)
    from flowerdemo.core.artifact import load_artifact

    class_names = tuple(load_artifact(ROOT / "weights" / "model.pt")[1].class_names)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**31)
    total = args.clients * args.saves

    exit_on_sigterm()
    photos = Path(tempfile.mkdtemp(prefix="flowerdemo-feedback-photos-"))
    servers = []
    try:
        start = time.perf_counter()
        planned = plan_saves(photos, total + 1, args.gps_every, class_names)  # one more for after a restart
        extra, planned = planned[-1], planned[:-1]
        print(f"{total} distinct photos ({sum(s.gps for s in planned)} JPEGs with GPS EXIF, the rest PNG) "
              f"in {time.perf_counter() - start:.1f} s; store {root}; "
              f"SSL context: {'one, reused' if args.reuse_ssl_context else 'one per request (default)'}")
        server = AppServer(args.app, extra_env=server_env(root))
        servers.append(server)
        print(f"server ready in {server.start(args.ready_timeout):.1f} s")
        warm_up(server.url, args.reuse_ssl_context, args.request_timeout)
        killer, moment = (kill_at_random(server, total, random.Random(seed)) if args.kill else (None, {}))
        outcomes, wall = run_clients(server.url, planned, args.clients, args.request_timeout,
                                     args.reuse_ssl_context, killer)
        report_clients(outcomes, wall)
        if args.kill:
            print(f"SIGKILL (seed {seed}) after {moment.get('answered')} answered saves (target "
                  f"{moment.get('target')}, then {moment.get('delay', 0) * 1e3:.0f} ms after a save was sent), "
                  f"{moment.get('saving')} save(s) in flight")
            server.stop()
            after_kill = inspect_store(root)
            print(f"right after the kill: {len(after_kill['records'])} records, {len(after_kill['orphans'])} photos "
                  f"without a record, {len(after_kill['parts'])} hidden .part files")
            server = AppServer(args.app, extra_env=server_env(root))
            servers.append(server)
            print(f"restarted, ready in {server.start(args.ready_timeout):.1f} s")
            answer = save_one_more(server.url, extra, args.reuse_ssl_context, args.request_timeout)
            outcomes.saved[extra.number] = answer
            planned.append(extra)
            print(f"a save through the restarted server: {'saved' if answer.get('saved') else answer}")
        inspected = inspect_store(root)
        answered = check_answered(inspected, planned, outcomes)
        expected = None if args.kill else total
        failures = report_store(inspected, answered, expected)
        if args.kill:
            known = {save.expected_id for save in planned}
            strangers = [record_id for record_id in inspected["records"] if record_id not in known]
            if strangers:
                failures.append(f"{len(strangers)} records of photos this run never sent")
            in_flight = [n for n in outcomes.unanswered if planned[n].expected_id in inspected["records"]]
            print(f"saves in flight at the kill: {len(outcomes.unanswered)}, of which {len(in_flight)} were kept "
                  "whole (either is fine; half is not)")
        elif outcomes.refused or outcomes.unanswered:
            failures.append(f"{len(outcomes.refused)} refused and {len(outcomes.unanswered)} unanswered saves")
    finally:
        for server in servers:
            stop_and_report(server)
        shutil.rmtree(photos, ignore_errors=True)
    for failure in failures:
        print(f"  FAILED: {failure}")
    print("FAIL" if failures else "OK")
    return 1 if failures else 0


if __name__ == "__main__":
    raise SystemExit(main())
