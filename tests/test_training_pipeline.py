"""End to end on a tiny ImageFolder tree: train -> resume -> export -> load -> evaluate, all offline."""
from __future__ import annotations

import contextlib
import io
import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from flowerdemo.training import evaluate, export, optimization, scripting, sources, train
from flowerdemo.core.artifact import load_artifact
from flowerdemo.training.data import DataSource, ImageListDataset, load_split
from flowerdemo.serve.predict import FlowerClassifier
from flowerdemo.core.preprocess import eval_transform

from conftest import CLASSES, write_image_tree

pytestmark = pytest.mark.slow  # trains, exports or spawns processes: not for day-to-day runs


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    root = write_image_tree(tmp_path_factory.mktemp("data"))
    out = tmp_path_factory.mktemp("run")
    args = train.get_args_parser().parse_args([
        "--dataset", "imagefolder", "--data-path", str(root), "--output-dir", str(out), "--epochs", "1",
        "--batch-size", "4", "--train-crop", "64", "--workers", "0", "--eval-every", "1", "--seed", "1",
    ])
    best = train.main(args)
    return root, out, args, best


def test_trainer_writes_checkpoints_log_and_args(trained):
    root, out, args, best = trained
    assert (out / "checkpoint.pth").is_file() and (out / "model_best.pth").is_file()
    log = (out / "log.csv").read_text().splitlines()
    assert log[0].startswith("epoch,lr,train_loss") and len(log) == 2
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=True)  # plain types only: no pickled code
    assert checkpoint["recipe"]["seed"] == 1 and checkpoint["class_names"] == list(CLASSES)
    assert checkpoint["recipe"]["preprocess"]["crop"] == 224 and checkpoint["recipe"]["world_size"] == 1
    assert 0.0 <= best["val_top1"] <= 1.0


@pytest.fixture(scope="module")
def resumed(trained, tmp_path_factory):
    """A copy of the trained run, resumed from its checkpoint to a second epoch.

    A copy, so that the trained run stays the one-epoch run it was: resuming in its own folder would replace
    model_best.pth whenever the second epoch happens to validate better than the first, which differs between
    machines (floating point, thread counts), and the export below would then report 2 epochs on some of them.
    """
    root, out, _, _ = trained
    folder = tmp_path_factory.mktemp("resumed") / "run"
    shutil.copytree(out, folder)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        train.main(train.get_args_parser().parse_args([
            "--dataset", "imagefolder", "--data-path", str(root), "--output-dir", str(folder), "--epochs", "2",
            "--batch-size", "4", "--train-crop", "64", "--workers", "0", "--seed", "1",
            "--resume", str(folder / "checkpoint.pth"),
        ]))
    return folder, printed.getvalue()


def test_resume_continues_from_the_next_epoch(resumed):
    folder, printed = resumed
    assert "resumed from" in printed
    assert [line.split(",")[0] for line in (folder / "log.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_weight_ema_is_what_gets_validated_saved_and_resumed(trained, tmp_path, capsys):
    root = trained[0]

    def run(epochs: int, *extra: str) -> dict:
        return train.main(train.get_args_parser().parse_args([
            "--dataset", "imagefolder", "--data-path", str(root), "--output-dir", str(tmp_path), "--epochs", str(epochs),
            "--batch-size", "4",
            "--train-crop", "64", "--workers", "0", "--eval-every", "1", "--model-ema-decay", "0.9", *extra]))

    run(1)
    checkpoint = torch.load(tmp_path / "checkpoint.pth", weights_only=True)
    shipped, raw = checkpoint["model"], checkpoint["raw_model"]
    changed = [key for key in raw if raw[key].is_floating_point() and not torch.equal(raw[key], shipped[key])]
    assert changed, "the averaged weights must differ from the raw ones after a few steps"
    run(2, "--resume", str(tmp_path / "checkpoint.pth"))
    assert "resumed from" in capsys.readouterr().out
    assert [line.split(",")[0] for line in (tmp_path / "log.csv").read_text().splitlines()[1:]] == ["1", "2"]


def test_invalid_ema_decay_names_the_valid_range():
    with pytest.raises(ValueError, match=r"0 \(off\) or in \(0, 1\)"):
        optimization.build_model_ema(torch.nn.Linear(2, 2), 1.5)


def test_mixed_batches_pair_images_and_share_the_targets():
    args = train.get_args_parser().parse_args(["--cutmix-alpha", "1.0", "--mixup-alpha", "0.2", "--batch-size", "4",
                                               "--label-smoothing", "0.0"])
    mixer = optimization.build_batch_mixer(args, num_classes=3)
    torch.manual_seed(0)
    images, labels = torch.rand(4, 3, 8, 8), torch.tensor([0, 1, 2, 0])
    mixed, soft_targets = mixer(images.clone(), labels)
    assert soft_targets.shape == (4, 3)
    torch.testing.assert_close(soft_targets.sum(1), torch.ones(4))
    # timm pairs image i with image B-1-i, so each row's weight sits on its own label and its partner's.
    partner_labels = labels.flip(0)
    own = soft_targets[torch.arange(4), labels]
    other = soft_targets[torch.arange(4), partner_labels]
    torch.testing.assert_close(torch.where(labels == partner_labels, own, own + other), torch.ones(4))
    assert not torch.equal(mixed, images)


def test_mixing_is_off_by_default_and_bad_settings_name_the_rule():
    parser = train.get_args_parser()
    assert optimization.build_batch_mixer(parser.parse_args([]), 3) is None
    with pytest.raises(ValueError, match="must be even"):
        optimization.build_batch_mixer(parser.parse_args(["--cutmix-alpha", "1", "--batch-size", "5"]), 3)
    with pytest.raises(ValueError, match=r">= 0 \(0 is off\)"):
        optimization.build_batch_mixer(parser.parse_args(["--mixup-alpha", "-1"]), 3)
    with pytest.raises(ValueError, match=r"\(0, 1\]"):
        optimization.build_batch_mixer(parser.parse_args(["--cutmix-alpha", "1", "--mix-prob", "0"]), 3)
    with pytest.raises(ValueError, match="7 training images fit in one batch and are an odd number"):
        optimization.build_batch_mixer(parser.parse_args(["--cutmix-alpha", "1", "--batch-size", "8"]), 3, train_size=7)
    assert optimization.build_batch_mixer(parser.parse_args(["--cutmix-alpha", "1", "--batch-size", "8"]), 3, train_size=9)


def test_trainer_runs_with_cutmix_and_mixup(trained, tmp_path):
    root, _, _, _ = trained
    best = train.main(train.get_args_parser().parse_args([
        "--dataset", "imagefolder", "--data-path", str(root), "--output-dir", str(tmp_path), "--epochs", "1",
        "--batch-size", "4",
        "--train-crop", "64", "--workers", "0", "--seed", "1", "--cutmix-alpha", "1.0", "--mixup-alpha", "0.2",
    ]))
    assert 0.0 <= best["val_top1"] <= 1.0 and math.isfinite(best["train_loss"])
    assert json.loads((tmp_path / "args.json").read_text())["cutmix_alpha"] == 1.0


def test_batchnorm_recalibration_measures_the_loader_and_spares_kept_layers():
    from torch.utils.data import TensorDataset, DataLoader
    from flowerdemo.training.engine import recalibrate_batchnorm

    torch.manual_seed(0)
    kept, recalibrated = torch.nn.BatchNorm2d(3), torch.nn.BatchNorm2d(3)
    model = torch.nn.Sequential(kept, torch.nn.Conv2d(3, 3, 1), recalibrated, torch.nn.Dropout(0.5))
    kept.running_mean.fill_(7.0)
    weights_before = {name: value.clone() for name, value in model.named_parameters()}
    images = torch.randn(10, 3, 4, 4) * 2 + 5
    # batches of unequal size (4, 4, 2): a cumulative average weighs batches equally, not images
    loader = DataLoader(TensorDataset(images, torch.zeros(10)), batch_size=4)
    seen = recalibrate_batchnorm(model, loader, keep=[kept])

    assert seen == 10 and not model.training and not recalibrated.training
    assert recalibrated.momentum == 0.1  # restored for anyone who trains on
    assert torch.all(kept.running_mean == 7.0)
    with torch.no_grad():
        conv_outputs = [model[1](model[0](batch)) for batch, _ in loader]
    expected_mean = torch.stack([out.mean(dim=(0, 2, 3)) for out in conv_outputs]).mean(0)
    torch.testing.assert_close(recalibrated.running_mean, expected_mean)
    assert recalibrated.num_batches_tracked.item() == 3
    for name, value in model.named_parameters():
        assert torch.equal(value, weights_before[name]), name


@pytest.fixture(scope="module")
def exported(trained, tmp_path_factory):
    root, out, _, _ = trained
    folder = tmp_path_factory.mktemp("model")
    args = export.get_args_parser().parse_args([
        "--checkpoint", str(out / "model_best.pth"), "--output", str(folder), "--dataset", "imagefolder",
        "--data-path", str(root),
        "--nonflowers-path", str(root / "nonflowers"), "--workers", "0", "--knn-k", "2", "--accept", "0.9",
    ])
    export.main(args)
    return root, folder


def test_export_writes_a_hub_ready_folder(exported):
    _, folder = exported
    for name in ("model.pt", "README.md", "metrics.json", "confusion_matrix.png", "reliability_diagram.png"):
        assert (folder / name).is_file(), name
    card = (folder / "README.md").read_text()
    assert card.startswith("---\nlicense:") and "torch.jit.load" in card and "| test top-1 |" in card
    # the rule that was really applied, with the targets it was given
    assert "accept at least\n  90% of the validation flowers" in card and "widest equal margin" in card
    assert "model.imagenet.float()" in card and "ImageNet view" in card
    assert "mirror image" in card
    assert "BatchNorm statistics" in card


def test_metadata_round_trips_and_is_enough_to_use_the_model(exported):
    _, folder = exported
    extra = {"flowerdemo.json": ""}
    module = torch.jit.load(str(folder / "model.pt"), _extra_files=extra)
    meta = json.loads(extra["flowerdemo.json"])
    assert meta["class_names"] == list(CLASSES)
    assert set(meta["preprocess"]) == {"resize", "crop", "mean", "std", "interpolation"}
    assert meta["arch"] == "tf_efficientnet_lite0" and meta["format_version"] == 2
    assert meta["training_args"]["epochs"] == 1 and 0.05 <= meta["temperature"] <= 20
    assert "data_path" not in meta["training_args"] and "output_dir" not in meta["training_args"]  # no machine paths
    assert meta["gate"]["knn_k"] == 2 and len(meta["gate"]["imagenet_weights"]) == 1000
    assert len(meta["imagenet_class_names"]) == 1000 and meta["imagenet_class_names"][162] == "beagle"
    assert meta["prediction_sets"]["method"] == "lac" and meta["prediction_sets"]["level"] == 0.95  # the default
    assert "top1" in meta["metrics"]["test"]
    assert meta["metrics"]["batchnorm"] == {"recalibrated": True, "images": 4 * len(CLASSES)}
    x = torch.randn(2, 3, meta["preprocess"]["crop"], meta["preprocess"]["crop"])
    module.imagenet.float()
    with torch.inference_mode():
        assert module(x).shape == (2, len(meta["class_names"]))
        assert module.imagenet_logits(x).shape == (2, 1000)


def test_export_recalibrates_only_the_batchnorm_statistics_of_trained_layers(trained, exported):
    _, out, _, _ = trained
    _, folder = exported
    shipped = torch.load(out / "model_best.pth", map_location="cpu", weights_only=True)["model"]
    exported_state = {name.removeprefix("backbone."): value
                      for name, value in torch.jit.load(str(folder / "model.pt")).state_dict().items()}
    assert torch.equal(exported_state["bn1.running_mean"], shipped["bn1.running_mean"])  # frozen stem: ImageNet's
    assert not torch.equal(exported_state["bn2.running_mean"], shipped["bn2.running_mean"])  # trained last layer
    assert torch.equal(exported_state["classifier.weight"], shipped["classifier.weight"])  # weights untouched


def test_forward_equals_head_of_features(exported):
    _, folder = exported
    module, metadata = load_artifact(folder / "model.pt")
    assert metadata.test_time_augmentation == "hflip_mean"  # the exporter's default
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        features = module.features(x)
        assert features.ndim == 4 and features.shape[0] == 2
        torch.testing.assert_close(module(x), module.head(features))


def test_mirror_averaged_network_is_the_mean_of_both_views(trained):
    _, out, _, _ = trained
    backbone = sources.load_checkpoint_backbone(out / "model_best.pth")[0]
    view = torch.nn.Identity()  # the ImageNet view plays no part here
    plain, averaged = scripting.script_model(backbone, view), scripting.script_model(backbone, view, mirror_average=True)
    x = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        expected = (plain(x) + plain(x.flip(3))) / 2
        torch.testing.assert_close(averaged(x), expected, rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(averaged(x.flip(3)), averaged(x), rtol=1e-4, atol=1e-4)  # mirror-invariant
        # Grad-CAM's map stays aligned with the photo: mirroring the photo mirrors the map.
        torch.testing.assert_close(averaged.features(x.flip(3)), averaged.features(x).flip(3), rtol=1e-4, atol=1e-4)


def test_trainer_eval_path_and_app_path_give_identical_tensors(exported):
    root, folder = exported
    classifier = FlowerClassifier.load(str(folder))
    samples, _ = load_split(DataSource("imagefolder", str(root)), "val")
    dataset = ImageListDataset(samples, eval_transform(classifier.metadata.preprocess))
    for index in range(2):
        trainer_tensor, _ = dataset[index]
        assert torch.equal(trainer_tensor, classifier.preprocess(samples[index].path))


def test_evaluator_reports_on_a_tiny_split(exported, tmp_path, capsys):
    root, folder = exported
    output = tmp_path / "report.json"
    args = evaluate.get_args_parser().parse_args([
        "--model", str(folder), "--split", "test", "--dataset", "imagefolder", "--data-path", str(root),
        "--nonflowers-path",
        str(root / "nonflowers"), "--nonflowers-subset", "all", "--output-json", str(output), "--workers", "0",
        "--plots-dir", str(tmp_path / "plots"),  # not there yet: the evaluator creates it
    ])
    evaluate.main(args)
    report = json.loads(output.read_text())
    assert report["summary"]["images"] == 6
    for key in ("top1", "top5", "macro_f1"):
        assert 0.0 <= report["summary"][key] <= 1.0
    assert report["summary"]["top5"] == 1.0  # only 3 classes
    assert len(report["per_class"]) == 3
    assert all({"true", "predicted", "count"} <= set(row) for row in report["most_confused"])
    assert report["ood"]["nonflowers"] == 4 and report["ood"]["flowers"] == 6
    for part in ("knn", "imagenet", "combined"):
        assert 0.0 <= report["ood"][part]["auroc"] <= 1.0
    assert report["verdicts"]["flowers"]["images"] == 6
    assert sum(report["verdicts"]["flowers"][v] for v in ("species", "unknown_species", "not_a_flower")) == pytest.approx(1)
    assert report["prediction_sets"]["images"] == 6
    assert report["unknown_species"]["left_out"]["images"] == 6  # every class is left out once
    assert report["calibration"]["ece_after"] >= 0.0
    assert (tmp_path / "plots" / "confusion_matrix.png").is_file()
    assert "top-1" in capsys.readouterr().out


def test_reexport_from_an_older_model_keeps_its_network(exported, tmp_path):
    """The upgrade path that load_artifact's refusal of format 1 points to: --from-model."""
    root, folder = exported
    extra = {"flowerdemo.json": ""}
    module = torch.jit.load(str(folder / "model.pt"), _extra_files=extra)
    old = json.loads(extra["flowerdemo.json"])
    old.update(format_version=1, ood={"score": "knn_cosine", "threshold": 0.5, "k": 2})
    old["training_args"]["data_path"] = "/somewhere/on/the/old/machine"
    for key in ("gate", "imagenet_class_names", "prediction_sets"):
        old.pop(key)
    old_folder = tmp_path / "old"
    old_folder.mkdir()
    torch.jit.save(module, str(old_folder / "model.pt"), _extra_files={"flowerdemo.json": json.dumps(old)})
    with pytest.raises(Exception, match="--from-model"):
        load_artifact(old_folder / "model.pt")

    upgraded = tmp_path / "new"
    export.main(export.get_args_parser().parse_args([
        "--from-model", str(old_folder), "--output", str(upgraded), "--dataset", "imagefolder", "--data-path", str(root),
        "--nonflowers-path", str(root / "nonflowers"), "--workers", "0", "--knn-k", "2", "--test-split", "",
    ]))
    new_module, metadata = load_artifact(upgraded / "model.pt")
    assert metadata.class_names == tuple(CLASSES) and metadata.gate is not None
    assert "data_path" not in metadata.training_args
    assert metadata.test_time_augmentation == "hflip_mean"  # as the old model did
    old_state, new_state = module.state_dict(), new_module.state_dict()
    for name, value in old_state.items():
        if name.startswith("backbone."):
            assert torch.equal(new_state[name], value), name


def test_resume_refuses_a_different_recipe_and_names_the_flags(trained, resumed, capsys):
    root, resumed = trained[0], resumed[0]  # the resumed run was planned for 2 epochs: 1 is a shrink
    common = ["--dataset", "imagefolder", "--data-path", str(root), "--output-dir", str(resumed), "--batch-size", "4",
              "--train-crop", "64", "--workers", "0", "--seed", "1", "--resume", str(resumed / "checkpoint.pth")]
    assert train.cli(common + ["--epochs", "3", "--lr", "0.5", "--augment", "none"]) == 2
    error = capsys.readouterr().err
    assert "--lr: 0.02 in the checkpoint, 0.5 now" in error and "--augment: 'trivialaugment'" in error
    assert "only --epochs may grow" in error and "--epochs" not in error.split("(")[1].split(")")[0]
    assert train.cli(common + ["--epochs", "1"]) == 2
    assert "--epochs may grow on resume, not shrink" in capsys.readouterr().err


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield key
            yield from _strings(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _strings(item)


def test_published_metadata_and_model_card_name_no_machine_paths(trained, exported):
    _, out, _, _ = trained
    root, folder = exported
    extra = {"flowerdemo.json": ""}
    torch.jit.load(str(folder / "model.pt"), _extra_files=extra)
    texts = list(_strings(json.loads(extra["flowerdemo.json"])))
    texts += [(folder / "README.md").read_text(), (folder / "metrics.json").read_text()]
    for text in texts:
        for place in (str(root), str(out), str(folder), str(Path.home()), "/tmp"):
            assert place not in text, (place, text[:200])
    recipe_strings = list(_strings(json.loads(extra["flowerdemo.json"])["training_args"]))
    assert not any(s.startswith("/") for s in recipe_strings)


def write_field_folder(folder: Path, count: int = 40) -> Path:
    """A tiny labels.csv folder of photos from elsewhere: known daisies/roses and an unknown species (grey)."""
    import csv

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(5)
    (folder / "images").mkdir(parents=True)
    colours = {"daisy": (250, 250, 240), "rose": (200, 20, 40), "snowdrop": (128, 128, 128)}
    with open(folder / "labels.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["filename", "source", "kind", "class_name", "accept"])
        for name, colour in colours.items():
            for index in range(count):
                filename = f"{name}_{index:03d}.jpg"
                pixels = np.clip(np.array(colour) + rng.integers(-40, 40, size=(64, 64, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / "images" / filename)
                kind = "unknown" if name == "snowdrop" else "known"
                writer.writerow([filename, "web", kind, name, "" if kind == "unknown" else name])
    return folder


def test_export_calibrates_on_the_calibration_share_of_photos_from_elsewhere(trained, tmp_path):
    from flowerdemo.training.field import FieldSplit, read_field_labels

    root, out, _, _ = trained
    field = write_field_folder(tmp_path / "elsewhere")
    folder = tmp_path / "model"
    export.main(export.get_args_parser().parse_args([
        "--checkpoint", str(out / "model_best.pth"), "--output", str(folder), "--dataset", "imagefolder",
        "--data-path", str(root), "--nonflowers-path", str(root / "nonflowers"), "--workers", "0", "--knn-k", "2",
        "--accept", "0.9", "--extra-data", str(field), "--test-split", "",
    ]))
    _, metadata = load_artifact(folder / "model.pt")
    rows, split = read_field_labels(field), FieldSplit()  # the recipe's default split: 0.5 / 0.2
    calibration = [r for r in rows if r.kind == "known" and split.part(r.path) == "calibration"]
    # unknown species are split by species: "snowdrop" falls among the calibration species (its name's position
    # is 0.30 < 0.5), so every snowdrop photo is calibrated on and none is reported on
    unknown = [r for r in rows if r.kind == "unknown"]
    assert {split.part_of(r) for r in unknown} == {"calibration"}
    pool = metadata.metrics["calibration_pool"]
    # by hand: the calibration share of the known flowers, plus the calibration species; no test photo
    assert pool["field_photos"] == len(calibration) + len(unknown)
    assert pool["field_known"] == len(calibration)
    assert pool["field_unknown_species"] == len(unknown)
    assert pool["val_photos"] == 2 * len(CLASSES)
    # the unknown-species rule was fitted on them (not the k-NN distance alone) and says how
    assert metadata.gate.unknown_weights != (1.0, 0.0)
    assert metadata.metrics["unknown_species_fit"]["unknown_species"] == pool["field_unknown_species"]
    assert metadata.gate.low_quality_sharpness > 0


def test_probe_refits_only_the_head_and_the_export_records_it(trained, tmp_path, capsys):
    from flowerdemo.training import probe
    from flowerdemo.training.field import FieldSplit, read_field_labels

    root, out, _, _ = trained
    field = write_field_folder(tmp_path / "elsewhere")
    run = tmp_path / "probe"
    common = ["--dataset", "imagefolder", "--data-path", str(root), "--extra-data", str(field),
              "--output-dir", str(run), "--workers", "0"]
    report = probe.main(probe.get_args_parser().parse_args(["--checkpoint", str(out / "model_best.pth"), *common,
                                                            "--l2", "0.001"]))
    before = torch.load(out / "model_best.pth", weights_only=True)
    after = torch.load(run / "model_best.pth", weights_only=True)
    body = [key for key in before["model"] if not key.startswith("classifier.") and "running_" not in key
            and "num_batches" not in key]
    assert body and all(torch.equal(before["model"][key], after["model"][key]) for key in body)
    # a trainer checkpoint's BatchNorm statistics are recalibrated first (as export would), and said so
    assert after["batchnorm"]["recalibrated"] and after["batchnorm"]["images"] > 0
    statistics = [key for key in before["model"] if key.endswith("running_mean")]
    assert any(not torch.equal(before["model"][key], after["model"][key]) for key in statistics)
    # learnt from the training share of the known photos from elsewhere, chose on their calibration share
    rows, split = read_field_labels(field), FieldSplit()
    known = [r for r in rows if r.kind == "known"]
    assert report["training_photos"]["elsewhere"] == sum(split.part(r.path) == "train" for r in known)
    assert report["selection_photos"]["elsewhere"] == sum(split.part(r.path) == "calibration" for r in known)
    assert json.loads((run / "probe.json").read_text())["chosen_l2"] == report["chosen_l2"] == 0.001
    assert not torch.equal(before["model"]["classifier.weight"], after["model"]["classifier.weight"])
    assert after["recipe"]["probe_l2"] == 0.001 and after["recipe"]["probe_extra_data"] == ["elsewhere"]
    assert after["recipe"]["probe_training_share"] == 0.7
    # the exported model carries the probe in its recipe and answers with the probed head
    folder = tmp_path / "model"
    export.main(export.get_args_parser().parse_args([
        "--checkpoint", str(run / "model_best.pth"), "--output", str(folder), "--dataset", "imagefolder",
        "--data-path", str(root), "--nonflowers-path", str(root / "nonflowers"), "--workers", "0", "--knn-k", "2",
        "--accept", "0.9", "--test-split", ""]))
    module, metadata = load_artifact(folder / "model.pt")
    assert metadata.training_args["probe_l2"] == 0.001
    assert metadata.metrics["batchnorm"] == after["batchnorm"]  # not recalibrated a second time
    card = (folder / "README.md").read_text()
    assert "linear probe, L-BFGS, L2 pull 0.001" in card and "training share of elsewhere" in card
    torch.testing.assert_close(module.backbone.classifier.weight, after["model"]["classifier.weight"])
    # probing twice would pull toward a head that is not the trained one: refused, in one line
    assert probe.cli(["--checkpoint", str(run / "model_best.pth"), *common]) == 2
    assert "probed already" in capsys.readouterr().err
