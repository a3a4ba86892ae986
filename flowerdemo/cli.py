"""Command line: ``flowerdemo COMMAND ...`` (or ``python -m flowerdemo COMMAND ...``).

``predict`` and ``feedback summary`` are implemented here. ``train``, ``export``, ``evaluate`` and ``publish`` hand their arguments to
``flowerdemo.training.train`` etc. (the same as ``python -m flowerdemo.training.train ...``), imported only when asked for, so
``predict`` never pays for the training stack.

``predict``: files and folders (searched recursively) are classified in batches; unreadable files are reported and skipped
without spoiling the rest of their batch. ``predict --together``: the files are 1-5 photos of one plant, answered once
(``core.combine``); the JSON object adds "files", "left_out" ([{"file", "reason"}]) and "carried_by". Exit status: 0 all classified, 1 some files failed, 2 usage error or
the model could not be loaded. Results go to stdout (a table, JSON lines or CSV); progress and errors to stderr.
"""
from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
from dataclasses import dataclass
from typing import Iterator, Sequence

from tqdm import tqdm

from .core.artifact import ModelLoadError
from .core.combine import MAX_PHOTOS, EmptyPlantError, LeftOutKind
from .core.names import displayed
from .core.preprocess import InvalidImageError, list_images, load_image
from .core.ranks import Rank
from .core.verdict import Verdict
from .feedback import summary
from .serve.hub import is_sha256_digest
from .serve.predict import FlowerClassifier
from .serve.settings import ENV_FEEDBACK_DIR, Settings, SettingsError

EXIT_OK, EXIT_SOME_FAILED, EXIT_USAGE = 0, 1, 2
PROG = "flowerdemo"
# Subcommands that are whole modules with their own parser and cli(): name -> (module, one-line help).
DELEGATED = {
    "train": ("flowerdemo.training.train", "fine-tune a network on Flowers-102 or your own ImageFolder tree (torchrun-ready)"),
    "probe": ("flowerdemo.training.probe", "refit a trained model's head on its frozen embeddings with photos from elsewhere"),
    "export": ("flowerdemo.training.export", "turn trained weights into a model folder (calibration, verdict rule, card)"),
    "evaluate": ("flowerdemo.training.evaluate", "measure a model on a split and on held-out non-flower photos"),
    "publish": ("flowerdemo.training.publish", "upload a model folder to the Hugging Face Hub"),
    "wise": ("flowerdemo.training.wise", "mix a fine-tune with the weights it started from (WiSE-FT), alpha chosen on held-out photos"),
}


class UsageError(Exception):
    """A problem with the command line or the model: reported on stderr, exit status 2."""


@dataclass(frozen=True)
class Result:
    file: str
    prediction: object | None = None  # flowerdemo.serve.predict.Prediction
    error: str | None = None


# --- command line ---------------------------------------------------------------------------------------------

def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def sha256_digest(text: str) -> str:
    digest = text.strip().lower()
    if not is_sha256_digest(digest):
        raise argparse.ArgumentTypeError(f"expected 64 hex digits, got {text!r}")
    return digest


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG, description="Recognise Oxford Flowers-102 species in photos.")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    add_predict_command(commands)
    add_feedback_command(commands)
    for name, (module, summary) in DELEGATED.items():  # listed for --help; main() hands them over first
        commands.add_parser(name, help=summary, add_help=False)
    return parser


def add_predict_command(commands) -> None:
    parser = commands.add_parser("predict", help="classify image files or folders",
                                 description="Classify images; folders are searched recursively.")
    parser.add_argument("paths", nargs="+", metavar="PATH", help="image files and/or folders")
    parser.add_argument("--top-k", type=positive_int, default=5, help="classes per image (default 5)")
    parser.add_argument("--model", default=None,
                        help="model.pt, model folder, hf://owner/repo[@rev] or owner/repo "
                             "(default: $FLOWERDEMO_MODEL, else the bundled weights/)")
    parser.add_argument("--revision", default=None, help="Hub branch, tag or commit (default: $FLOWERDEMO_MODEL_REVISION)")
    parser.add_argument("--sha256", type=sha256_digest, default=None,
                        help="refuse the model file unless its SHA-256 is this (default: $FLOWERDEMO_MODEL_SHA256)")
    parser.add_argument("--batch-size", type=positive_int, default=16, help="images per forward pass (default 16)")
    parser.add_argument("--together", action="store_true",
                        help=f"the files are photos of one plant (1 to {MAX_PHOTOS}): one answer for the set; "
                             "unreadable, repeated and non-flower photos are named and left out")
    output = parser.add_mutually_exclusive_group()
    output.add_argument("--json", dest="format", action="store_const", const="json", help="one JSON object per line")
    output.add_argument("--csv", dest="format", action="store_const", const="csv", help="CSV with a header row")
    parser.set_defaults(format="table", handler=run_predict)


def add_feedback_command(commands) -> None:
    parser = commands.add_parser("feedback", help="look at the corrections people saved on the page",
                                 description="The feedback folder the app's \"Is this right?\" buttons fill.")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    summary = actions.add_parser("summary", help="counts by label and the corrections people made most often")
    summary.add_argument("--dir", default=None,
                         help="the feedback folder (default: $FLOWERDEMO_FEEDBACK_DIR, else feedback/ beside the app)")
    summary.add_argument("--top", type=positive_int, default=10, help="corrected pairs to list (default 10)")
    summary.set_defaults(handler=run_feedback_summary)


def settings_from_env():
    """``Settings.from_env()``, a bad value a usage error (exit status 2, the variable named)."""
    try:
        return Settings.from_env()
    except SettingsError as error:
        raise UsageError(str(error)) from None


def run_feedback_summary(args: argparse.Namespace) -> int:
    folder = args.dir or settings_from_env().feedback_dir
    if not os.path.isdir(folder):
        raise UsageError(f"no feedback folder at {folder}: give --dir, or set {ENV_FEEDBACK_DIR}")
    print(summary(folder, top=args.top))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] in DELEGATED:
        import importlib

        return importlib.import_module(DELEGATED[argv[0]][0]).cli(argv[1:], prog=f"{PROG} {argv[0]}")
    args = build_parser().parse_args(argv)  # usage errors: argparse prints them and exits 2
    try:
        return args.handler(args)
    except UsageError as error:
        print(f"{PROG} {args.command}: error: {error}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `... | head`: stop quietly
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_SOME_FAILED


# --- predict --------------------------------------------------------------------------------------------------

def run_predict(args: argparse.Namespace) -> int:
    files = collect_files(args.paths)
    if args.together:
        check_together(files)  # before the model is loaded: a usage error costs nothing
    settings = settings_from_env()  # $FLOWERDEMO_MODEL, _REVISION, _SHA256: the defaults of the three options
    classifier = load_classifier(args.model or settings.model, args.revision or settings.model_revision,
                                 args.sha256 or settings.model_sha256)
    if args.together:
        return run_together(classifier, files, args.top_k, args.format, sys.stdout)
    writer = make_writer(args.format, sys.stdout, files)
    failed = report(classify(classifier, files, args.batch_size, args.top_k), len(files), writer)
    return EXIT_SOME_FAILED if failed else EXIT_OK


def collect_files(paths: Sequence[str]) -> list[str]:
    """Files as given, folders expanded to their images (recursive, sorted). Missing paths are kept: they
    become per-file errors, like any other unreadable input."""
    files = []
    for path in paths:
        if os.path.isdir(path):
            found = list_images(path)
            if not found:
                print(f"warning: no images found in folder {path}", file=sys.stderr)
            files.extend(found)
        else:
            files.append(path)
    if not files:
        raise UsageError("no images to classify (folders are searched for .jpg, .png, .webp, .gif, .bmp, .tif)")
    return files


def run_together(classifier, files: Sequence[str], top_k: int, fmt: str, stream) -> int:
    """``predict --together``: one answer for the photos of one plant (``core.combine``). Exit status 1 when a
    file could not be read (as for ``predict``), also when nothing was left to answer with."""
    try:
        plant = classifier.predict_plant(files, names=list(files), top_k=top_k)
    except EmptyPlantError as error:
        record = {"files": list(files), "error": str(error)}
        if fmt == "json":
            print(json.dumps(record), file=stream)
        elif fmt == "csv":
            csv.writer(stream, lineterminator="\n").writerows(
                [PLANT_CSV_COLUMNS, ["|".join(files)] + [""] * (len(PLANT_CSV_COLUMNS) - 2) + [str(error)]])
        else:
            print(f"ERROR: {error}", file=stream)
        return EXIT_SOME_FAILED
    plant = dataclasses.replace(plant, prediction=displayed(plant.prediction))
    {"json": plant_json, "csv": plant_csv}.get(fmt, plant_table)(plant, stream)
    return EXIT_SOME_FAILED if any(item.kind is LeftOutKind.UNREADABLE for item in plant.left_out) else EXIT_OK


def check_together(files: Sequence[str]) -> None:
    if len(files) > MAX_PHOTOS:
        raise UsageError(f"--together takes 1 to {MAX_PHOTOS} photos of one plant, got {len(files)}")


def load_classifier(model: str | None, revision: str | None, sha256: str | None):
    try:
        return FlowerClassifier.load(model, revision=revision, sha256=sha256)
    except (ModelLoadError, OSError) as error:
        raise UsageError(f"cannot load the model: {error}") from None


def classify(classifier, files: Sequence[str], batch_size: int, top_k: int) -> Iterator[Result]:
    """Results in input order, one batch at a time."""
    for start in range(0, len(files), batch_size):
        yield from classify_batch(classifier, files[start:start + batch_size], top_k)


def classify_batch(classifier, files: Sequence[str], top_k: int) -> list[Result]:
    loaded = [read_image(path) for path in files]
    good = [image for image in loaded if not isinstance(image, Result)]
    # Display names in every output format (table, JSON, CSV): what a person reads, e.g. no dataset "?".
    predictions = iter([displayed(p) for p in classifier.predict_batch(good, top_k)] if good else [])
    return [image if isinstance(image, Result) else Result(path, next(predictions))
            for path, image in zip(files, loaded)]


def read_image(path: str):
    """The image, or a failed :class:`Result` saying why it cannot be read."""
    try:
        return load_image(path)
    except InvalidImageError as error:
        return Result(path, error=str(error))
    except Exception as error:  # noqa: BLE001 -- one odd file must not stop a run over thousands
        return Result(path, error=f"unexpected error reading the image ({type(error).__name__}: {error})")


def report(results: Iterator[Result], total: int, writer) -> int:
    """Write each result, with a tqdm bar on stderr (when it is a terminal); the number of failed files."""
    failed = 0
    with tqdm(total=total, unit="img", file=sys.stderr, disable=None, leave=False) as bar:
        for result in results:
            with tqdm.external_write_mode(file=sys.stdout):  # keep the bar off the result lines
                writer(result)
            bar.update(1)
            failed += result.error is not None
    return failed


# --- output ---------------------------------------------------------------------------------------------------

def make_writer(fmt: str, stream, files: Sequence[str]):
    if fmt == "json":
        return lambda result: print(json.dumps(result_dict(result)), file=stream, flush=True)
    if fmt == "csv":
        return csv_writer(stream)
    return table_writer(stream, files)


def result_dict(result: Result) -> dict:
    if result.error is not None:
        return {"file": result.file, "error": result.error}
    return {"file": result.file, **result.prediction.to_dict()}


CSV_COLUMNS = ("file", "label", "prob", "verdict", "is_flower", "looks_like", "prediction_set", "ood_score",
               "scientific_name", "genus", "family", "answer_rank", "answer_name", "answer_scientific_name",
               "answer_probability", "error")


def csv_writer(stream):
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)

    def write(result: Result) -> None:
        if result.error is not None:
            writer.writerow([result.file] + [""] * (len(CSV_COLUMNS) - 2) + [result.error])
        else:
            writer.writerow([result.file, *csv_cells(result.prediction), ""])
        stream.flush()

    return write


def csv_cells(prediction) -> list:
    """The CSV columns between "file" and "error" for one prediction."""
    data = prediction.to_dict()
    top = data["top_k"][0]
    flower = {True: "true", False: "false", None: ""}[data["is_flower"]]
    score = "" if data["ood_score"] is None else data["ood_score"]
    answer = data["answer"] or {}
    return [top["label"], top["prob"], data["verdict"] or "", flower, data["looks_like"] or "",
            "|".join(data["prediction_set"]), score, top.get("scientific_name", ""), top.get("genus", ""),
            top.get("family", ""), _blank(answer.get("rank")), _blank(answer.get("name")),
            _blank(answer.get("scientific_name")), _blank(answer.get("probability"))]


def _blank(value) -> str:
    return "" if value is None else value


def table_writer(stream, files: Sequence[str]):
    width = min(max(len("file"), *(len(f) for f in files)), 60)
    print(f"{'file':{width}}  {'prediction':28}  {'prob':>6}  {'verdict':24}  others", file=stream)

    def write(result: Result) -> None:
        name = result.file if len(result.file) <= width else "..." + result.file[-(width - 3):]
        if result.error is not None:
            line = f"{name:{width}}  ERROR: {result.error}"
        else:
            line = f"{name:{width}}  {table_cells(result.prediction)}"
        print(line, file=stream, flush=True)

    return write


def verdict_cell(prediction) -> str:
    """species / "one of N" / unknown species / "NOT A FLOWER (beagle)", in at most 24 characters."""
    if prediction.verdict is Verdict.NOT_A_FLOWER:
        return f"NOT A FLOWER ({prediction.looks_like})"[:24] if prediction.looks_like else "NOT A FLOWER"
    if prediction.verdict is Verdict.UNKNOWN_SPECIES:
        return "unknown species"
    if prediction.verdict is Verdict.TOO_SMALL:
        return "too small/blurry to tell"
    answer = prediction.answer
    if prediction.taxa and answer is not None and answer.rank is not Rank.SPECIES:
        # a model with a rank rule: the rank it is sure of ("genus: pinks"), or not sure at all
        return f"{answer.rank}: {answer.name}"[:24] if answer.rank else f"not sure (one of {len(prediction.prediction_set)})"
    if len(prediction.prediction_set) > 1:
        return f"one of {len(prediction.prediction_set)}"
    return Verdict.SPECIES.value if prediction.verdict else "?"


def table_cells(prediction) -> str:
    label, prob = prediction.top_k[0]
    others = ", ".join(f"{name} {p:.1%}" for name, p in prediction.top_k[1:])
    return f"{label[:28]:28}  {prob:6.1%}  {verdict_cell(prediction):24}  {others}"


# --- predict --together ---------------------------------------------------------------------------------------

PLANT_CSV_COLUMNS = CSV_COLUMNS[:-1] + ("carried_by", "left_out", "error")


def plant_json(plant, stream) -> None:
    print(json.dumps(plant.to_dict()), file=stream, flush=True)


def plant_csv(plant, stream) -> None:
    """One row: the files joined by "|", the usual columns, the photo that carried the answer and those left out."""
    left_out = "|".join(f"{item.name}: {item.reason}" for item in plant.left_out)
    csv.writer(stream, lineterminator="\n").writerows(
        [PLANT_CSV_COLUMNS, ["|".join(plant.names), *csv_cells(plant.prediction), plant.carrier, left_out, ""]])
    stream.flush()


def plant_table(plant, stream) -> None:
    count = len(plant.used)
    print(f"one plant, {count} photo{'s' if count != 1 else ''} combined: "
          + ", ".join(plant.names[i] for i in plant.used), file=stream)
    print(f"{'prediction':28}  {'prob':>6}  {'verdict':24}  others", file=stream)
    print(table_cells(plant.prediction), file=stream)
    print(f"carried by: {plant.carrier}", file=stream)
    for item in plant.left_out:
        print(f"left out: {item.name} ({item.reason})", file=stream)
    stream.flush()
