"""torchrun-style DDP on CPU (gloo): two real processes, one tiny epoch; and the uneven-class options."""
from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from conftest import CLASSES, write_image_tree
from flowerdemo.training import loaders, optimization, train
from flowerdemo.training.distributed import Processes
from flowerdemo.training.recipe import Recipe
from flowerdemo.core.preprocess import PreprocessConfig

pytestmark = pytest.mark.slow  # trains, exports or spawns processes: not for day-to-day runs


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _rank(rank: int, world_size: int, port: int, argv: list, record_dir: str) -> None:
    """One process as torchrun would start it (the same environment variables), recording every training image
    its loader fetched."""
    from flowerdemo.training import data

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), LOCAL_RANK=str(rank),
                      WORLD_SIZE=str(world_size), LOCAL_WORLD_SIZE=str(world_size))
    torch.set_num_threads(1)
    fetched = []
    original = data.ImageListDataset.__getitem__

    def recording(self, index):
        fetched.append(self.samples[index].path)
        return original(self, index)

    data.ImageListDataset.__getitem__ = recording
    train.main(train.get_args_parser().parse_args(argv))
    Path(record_dir, f"rank{rank}.json").write_text(json.dumps(fetched))


@pytest.fixture(scope="module")
def ddp_run(tmp_path_factory):
    root = write_image_tree(tmp_path_factory.mktemp("data"), counts=(("train", 4), ("val", 1)))
    out, record = tmp_path_factory.mktemp("run"), tmp_path_factory.mktemp("record")
    argv = ["--dataset", "imagefolder", "--data-path", str(root), "--output-dir", str(out), "--epochs", "1",
            "--batch-size", "2", "--train-crop", "32", "--workers", "0", "--eval-every", "1", "--no-pretrained"]
    mp.spawn(_rank, args=(2, _free_port(), argv, str(record)), nprocs=2, join=True)
    fetched = [json.loads((record / f"rank{rank}.json").read_text()) for rank in range(2)]
    return root, out, fetched


def test_two_processes_train_disjoint_shards_that_cover_the_epoch(ddp_run):
    root, _, fetched = ddp_run
    shards = [[path for path in paths if f"{os.sep}train{os.sep}" in path] for paths in fetched]
    everything = sorted(str(p) for p in (root / "train").rglob("*.jpg"))
    assert len(shards[0]) == len(shards[1]) == len(everything) // 2
    assert not set(shards[0]) & set(shards[1])
    assert sorted(shards[0] + shards[1]) == everything
    # rank 0 alone validated
    assert any(f"{os.sep}val{os.sep}" in path for path in fetched[0])
    assert not any(f"{os.sep}val{os.sep}" in path for path in fetched[1])


def test_rank_zero_wrote_the_checkpoint_with_the_global_epoch(ddp_run):
    _, out, _ = ddp_run
    checkpoint = torch.load(out / "checkpoint.pth", weights_only=True)
    assert checkpoint["recipe"]["world_size"] == 2 and checkpoint["epoch"] == 0
    assert checkpoint["class_names"] == list(CLASSES) and "val_top1" in checkpoint["metrics"]
    log = (out / "log.csv").read_text().splitlines()
    assert len(log) == 2 and log[1].split(",")[-1] == "12"  # train_images: both shards, summed over processes


def test_resuming_with_another_process_count_is_refused(ddp_run, capsys):
    root, out, _ = ddp_run
    assert train.cli(["--dataset", "imagefolder", "--data-path", str(root), "--output-dir", str(out), "--epochs", "2",
                      "--batch-size", "2", "--train-crop", "32", "--workers", "0", "--no-pretrained",
                      "--resume", str(out / "checkpoint.pth")]) == 2
    assert "torchrun --nproc_per_node: 2 in the checkpoint, 1 now" in capsys.readouterr().err


# ------------------------------------------------------------------------------------------------ uneven classes


def _recipe(**overrides) -> Recipe:
    return Recipe(arch="tf_efficientnet_lite0", preprocess=PreprocessConfig(), **overrides)


def test_the_balanced_sampler_draws_every_class_about_equally():
    labels = [0] * 90 + [1] * 10
    sampler = loaders.build_train_sampler(labels, 2, _recipe(class_balance="sampler"), Processes())
    drawn = [labels[index] for index in sampler]
    assert len(drawn) == 100 and 35 <= drawn.count(1) <= 65  # about 50; unweighted it would be about 10
    assert loaders.build_train_sampler(labels, 2, _recipe(), Processes()) is None  # plain shuffle
    first = list(sampler)
    sampler.set_epoch(1)
    assert list(sampler) != first  # a new draw each epoch


def test_the_balanced_sampler_shards_one_draw_over_processes():
    labels = [0] * 7 + [1] * 2 + [2] * 2
    recipe = _recipe(class_balance="sampler", seed=5)
    single = list(loaders.build_train_sampler(labels, 3, recipe, Processes()))
    shards = [list(loaders.build_train_sampler(labels, 3, recipe, Processes(rank, 2, rank))) for rank in (0, 1)]
    assert len(shards[0]) == len(shards[1]) == 6  # ceil(11 / 2)
    interleaved = [index for pair in zip(*shards) for index in pair]
    generator = torch.Generator().manual_seed(5)
    expected = list(torch.utils.data.WeightedRandomSampler(
        torch.tensor([1 / 7] * 7 + [1 / 2] * 4, dtype=torch.float64), 12, replacement=True, generator=generator))
    assert interleaved == expected and single == expected[:11]


def test_the_balanced_loss_weighs_each_class_equally_in_total():
    labels = [0, 0, 0, 1]
    weights = optimization.balanced_loss_weights(labels, 3)
    torch.testing.assert_close(weights, torch.tensor([4 / 9, 4 / 3, 0.0]))
    criterion = optimization.build_criterion(_recipe(class_balance="loss", label_smoothing=0.0), labels, 3, mixing=False)
    plain = optimization.build_criterion(_recipe(label_smoothing=0.0), labels, 3, mixing=False)
    wrong_on_rare = torch.tensor([[2.0, 0.0, 0.0]]), torch.tensor([1])
    wrong_on_common = torch.tensor([[0.0, 2.0, 0.0]]), torch.tensor([0])
    assert plain(*wrong_on_rare) == pytest.approx(plain(*wrong_on_common).item())
    # with one-image batches the weighted mean is the plain loss; the weights show in mixed batches
    batch = torch.cat([wrong_on_rare[0], wrong_on_common[0]]), torch.tensor([1, 0])
    per_image = plain.__class__(reduction="none")(*batch)
    expected = (per_image * torch.tensor([4 / 3, 4 / 9])).sum() / (4 / 3 + 4 / 9)
    assert criterion(*batch).item() == pytest.approx(expected.item())


@pytest.mark.parametrize("balance", ["sampler", "loss"])
def test_the_trainer_runs_with_class_balance(balance, tmp_path):
    root = write_image_tree(tmp_path / "data", counts=(("train", 2), ("val", 1)))
    for extra in ("a", "b", "c", "d"):  # make daisy the common class
        (root / "train" / "daisy" / f"{extra}.jpg").write_bytes((root / "train" / "daisy" / "0.jpg").read_bytes())
    best = train.main(train.get_args_parser().parse_args([
        "--dataset", "imagefolder", "--data-path", str(root), "--output-dir", str(tmp_path / "run"), "--epochs", "1",
        "--batch-size", "2", "--train-crop", "32", "--workers", "0", "--no-pretrained", "--class-balance", balance]))
    assert best["train_images"] == 10
    assert torch.load(tmp_path / "run" / "checkpoint.pth", weights_only=True)["recipe"]["class_balance"] == balance
