"""Loading models from a Hugging Face Hub repo, served offline from a hand-built huggingface_hub cache, and
refusing model files that are not what they claim (checksum, pickles, inconsistent metadata).

The cache layout is huggingface_hub's (see ``huggingface_hub/file_download.py``, ``hf_hub_download``)::

    <HF_HUB_CACHE>/models--owner--repo/blobs/<sha256 of the file>
                                       snapshots/<commit>/model.pt -> ../../blobs/<sha256>
                                       refs/main                    (the commit hash, no newline)
"""
from __future__ import annotations

import builtins
import hashlib
import json
import os
import pickle
from pathlib import Path

import pytest
import torch
from torch import nn

from conftest import TINY_CLASSES, TinyImageNetView, tiny_gate
from flowerdemo.core.artifact import METADATA_FILE, MODEL_FILE, ModelLoadError, ModelMetadata, quiet_torchscript
from flowerdemo.training.scripting import script_model
from flowerdemo.serve.predict import FlowerClassifier
from flowerdemo.core.preprocess import PreprocessConfig

REPO = "owner/repo"
MAIN_COMMIT = hashlib.sha1(b"second commit").hexdigest()
OLD_COMMIT = hashlib.sha1(b"first commit").hexdigest()
OLD_CLASSES = ("daisy", "tulip")


# --- a tiny scriptable network (the real EfficientNet is in conftest; this one scripts in milliseconds) --------

class TinyBackbone(nn.Module):
    num_features = 8

    def __init__(self, num_classes: int):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, kernel_size=8, stride=8)
        self.fc = nn.Linear(8, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(x.mean(dim=(2, 3)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def metadata_dict(class_names=TINY_CLASSES) -> dict:
    return ModelMetadata(class_names=tuple(class_names), preprocess=PreprocessConfig(), arch="tiny").to_dict()


def gated_metadata_dict(imagenet_classes: int) -> dict:
    """Metadata whose verdict rule weighs ``imagenet_classes`` ImageNet classes (the tiny view has 5)."""
    return dict(metadata_dict(), gate=tiny_gate(imagenet_classes).to_dict(),
                imagenet_class_names=[f"thing {i}" for i in range(imagenet_classes)])


def save_model(path: Path, num_outputs: int, metadata: dict | str | None) -> Path:
    """A TorchScript file with whatever ``flowerdemo.json`` we like (None: no metadata at all)."""
    torch.manual_seed(0)
    module = script_model(TinyBackbone(num_outputs), TinyImageNetView())
    extra = {} if metadata is None else {METADATA_FILE: metadata if isinstance(metadata, str) else json.dumps(metadata)}
    path.parent.mkdir(parents=True, exist_ok=True)
    with quiet_torchscript():
        torch.jit.save(module, str(path), _extra_files=extra)
    return path


# --- the offline Hub cache --------------------------------------------------------------------------------------

class HubCache:
    def __init__(self, root: Path):
        self.root = root

    def repo_dir(self, repo_id: str) -> Path:
        return self.root / ("models--" + repo_id.replace("/", "--"))

    def add(self, repo_id: str, commit: str, data: bytes, refs: tuple = ()) -> str:
        """Put ``model.pt`` at ``commit`` (as a blob + snapshot symlink), point ``refs`` at it; its sha256."""
        repo = self.repo_dir(repo_id)
        digest = hashlib.sha256(data).hexdigest()
        blob = repo / "blobs" / digest
        blob.parent.mkdir(parents=True, exist_ok=True)
        blob.write_bytes(data)
        pointer = repo / "snapshots" / commit / MODEL_FILE
        pointer.parent.mkdir(parents=True, exist_ok=True)
        try:
            pointer.symlink_to(Path("..") / ".." / "blobs" / digest)
        except OSError:  # no symlinks (Windows without developer mode): huggingface_hub then copies too
            pointer.write_bytes(data)
        for ref in refs:
            (repo / "refs").mkdir(exist_ok=True)
            (repo / "refs" / ref).write_text(commit)
        return digest


@pytest.fixture
def hub_cache(tmp_path, monkeypatch) -> HubCache:
    import huggingface_hub.constants as constants

    home = tmp_path / "hf_home"
    cache = home / "hub"
    cache.mkdir(parents=True)
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    # huggingface_hub reads these once, at import: patch the values it actually uses too.
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    for name in ("FLOWERDEMO_MODEL", "FLOWERDEMO_MODEL_REVISION", "FLOWERDEMO_MODEL_SHA256"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)  # "owner/repo" must not resolve to a local folder
    return HubCache(cache)


@pytest.fixture(scope="module")
def old_model_bytes(tmp_path_factory) -> bytes:
    return save_model(tmp_path_factory.mktemp("old") / MODEL_FILE, len(OLD_CLASSES), metadata_dict(OLD_CLASSES)).read_bytes()


@pytest.fixture
def hub_repo(hub_cache, tiny_model_dir, old_model_bytes) -> dict:
    """owner/repo with two commits: OLD (2 classes, tag v1) and MAIN (the 3-class tiny model, branch main)."""
    old_sha = hub_cache.add(REPO, OLD_COMMIT, old_model_bytes, refs=("v1",))
    main_sha = hub_cache.add(REPO, MAIN_COMMIT, (tiny_model_dir / MODEL_FILE).read_bytes(), refs=("main",))
    return {"main_sha256": main_sha, "old_sha256": old_sha}


# --- loading from the Hub cache ---------------------------------------------------------------------------------

def test_cache_layout_is_what_huggingface_hub_expects(hub_cache, hub_repo):
    from huggingface_hub import try_to_load_from_cache

    found = try_to_load_from_cache(REPO, MODEL_FILE, cache_dir=str(hub_cache.root))
    assert found and Path(found).resolve() == (hub_cache.repo_dir(REPO) / "blobs" / hub_repo["main_sha256"]).resolve()


def test_hf_url_loads_main(hub_repo):
    classifier = FlowerClassifier.load(f"hf://{REPO}")
    assert classifier.class_names == TINY_CLASSES
    assert classifier.source == f"hf://{REPO}@main"


def test_repo_id_with_revision_argument(hub_repo):
    assert FlowerClassifier.load(REPO, revision=OLD_COMMIT).class_names == OLD_CLASSES
    assert FlowerClassifier.load(REPO).class_names == TINY_CLASSES


@pytest.mark.parametrize("revision", [OLD_COMMIT, "v1"])
def test_hf_url_with_pinned_revision(hub_repo, revision):
    classifier = FlowerClassifier.load(f"hf://{REPO}@{revision}")
    assert classifier.class_names == OLD_CLASSES
    assert classifier.source == f"hf://{REPO}@{revision}"


@pytest.mark.parametrize("spec", [f"hf://{REPO}@no-such-branch", f"hf://{REPO}@{'f' * 40}", "hf://owner/other-repo",
                                  "owner/other-repo"])
def test_unknown_revision_or_repo_says_what_to_do(hub_repo, spec):
    with pytest.raises(ModelLoadError) as info:
        FlowerClassifier.load(spec)
    message = str(info.value)
    assert "not in the local Hugging Face cache" in message
    assert "FLOWERDEMO_MODEL" in message  # the way out: point it at a local folder (or connect once)


def test_flowerdemo_model_env_is_honoured(hub_repo, monkeypatch):
    monkeypatch.setenv("FLOWERDEMO_MODEL", f"hf://{REPO}")
    assert FlowerClassifier.load().class_names == TINY_CLASSES
    monkeypatch.setenv("FLOWERDEMO_MODEL", REPO)
    monkeypatch.setenv("FLOWERDEMO_MODEL_REVISION", "v1")
    classifier = FlowerClassifier.load()
    assert classifier.class_names == OLD_CLASSES and classifier.source == f"hf://{REPO}@v1"


def test_settings_given_are_used_and_the_environment_is_not(hub_repo, monkeypatch, tiny_model_dir):
    from flowerdemo.serve.hub import BUNDLED_MODEL_DIR, parse_source, resolve_model_file
    from flowerdemo.serve.settings import Settings

    monkeypatch.setenv("FLOWERDEMO_MODEL", "hf://someone/else")
    monkeypatch.setenv("FLOWERDEMO_MODEL_SHA256", "not read")
    assert parse_source(settings=Settings()).location == str(BUNDLED_MODEL_DIR)
    source = parse_source(settings=Settings(model=REPO, model_revision="v1"))
    assert (source.kind, source.location, source.revision) == ("hub", REPO, "v1")
    assert parse_source(f"hf://{REPO}", settings=Settings(model_revision="v1")).revision == "v1"
    assert parse_source(f"hf://{REPO}@main", settings=Settings(model_revision="v1")).revision == "main"
    with pytest.raises(ModelLoadError, match="refusing to load it"):
        resolve_model_file(source, settings=Settings(model_sha256=hub_repo["main_sha256"]))
    assert resolve_model_file(source, settings=Settings(model_sha256=hub_repo["old_sha256"]))


def test_a_bad_model_variable_is_a_model_load_error(hub_repo, monkeypatch):
    monkeypatch.setenv("FLOWERDEMO_MODEL_SHA256", "abc123")
    with pytest.raises(ModelLoadError, match="FLOWERDEMO_MODEL_SHA256 must be 64 hex digits"):
        FlowerClassifier.load(f"hf://{REPO}")


# --- checksum pinning -------------------------------------------------------------------------------------------

def test_right_sha256_loads(hub_repo, monkeypatch):
    assert FlowerClassifier.load(f"hf://{REPO}", sha256=hub_repo["main_sha256"]).class_names == TINY_CLASSES
    monkeypatch.setenv("FLOWERDEMO_MODEL_SHA256", hub_repo["old_sha256"].upper())
    assert FlowerClassifier.load(f"hf://{REPO}@v1").class_names == OLD_CLASSES


@pytest.mark.parametrize("via", ["argument", "env"])
def test_wrong_sha256_is_refused_before_loading(hub_repo, monkeypatch, via):
    import flowerdemo.serve.predict

    loaded = []
    monkeypatch.setattr(flowerdemo.serve.predict, "load_artifact", lambda path: loaded.append(path))
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loaded.append(a))
    wrong = hub_repo["old_sha256"]  # a real digest, of another file
    kwargs = {"sha256": wrong} if via == "argument" else {}
    if via == "env":
        monkeypatch.setenv("FLOWERDEMO_MODEL_SHA256", wrong)
    with pytest.raises(ModelLoadError, match="refusing to load it"):
        FlowerClassifier.load(f"hf://{REPO}", **kwargs)
    assert loaded == []


def test_malformed_sha256_is_refused(hub_repo):
    with pytest.raises(ModelLoadError, match="64 hex digits"):
        FlowerClassifier.load(f"hf://{REPO}", sha256="abc123")


# --- pickles are never unpickled ----------------------------------------------------------------------------------

class CreatesFileWhenUnpickled:
    def __init__(self, marker: Path):
        self.marker = str(marker)

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


PICKLE_WRITERS = {
    "torch_save_zip": lambda obj, path: torch.save({"model": obj}, path),
    "torch_save_legacy": lambda obj, path: torch.save({"model": obj}, path, _use_new_zipfile_serialization=False),
    "plain_pickle": lambda obj, path: path.write_bytes(pickle.dumps({"model": obj})),
}


def test_the_pickle_payload_works(tmp_path):
    """The premise of the next test: unpickling this payload really does create the marker file."""
    marker = tmp_path / "pwned"
    pickle.loads(pickle.dumps(CreatesFileWhenUnpickled(marker)))
    assert marker.exists()


@pytest.mark.parametrize("writer", list(PICKLE_WRITERS))
def test_pickle_named_model_pt_is_refused_unopened(hub_cache, tmp_path, writer):
    marker = tmp_path / "pwned"
    local = tmp_path / "pickle" / MODEL_FILE
    local.parent.mkdir()
    PICKLE_WRITERS[writer](CreatesFileWhenUnpickled(marker), local)
    hub_cache.add(REPO, MAIN_COMMIT, local.read_bytes(), refs=("main",))
    for spec in (str(local), f"hf://{REPO}"):
        with pytest.raises(ModelLoadError, match="not a TorchScript model"):
            FlowerClassifier.load(spec)
    assert not marker.exists(), "the pickle was unpickled"


# --- metadata that does not fit the network -----------------------------------------------------------------------

def _without(key):
    data = metadata_dict()
    del data[key]
    return data


def _preprocess(**changes):
    data = metadata_dict()
    data["preprocess"].update(changes)
    return data


BAD_METADATA = {
    "class_count_differs_from_logits": (4, metadata_dict(TINY_CLASSES), "outputs (1, 4) logits but the metadata names 3"),
    "missing_class_names": (3, _without("class_names"), "missing class_names"),
    "empty_class_names": (3, dict(metadata_dict(), class_names=[]), "class_names must be a non-empty list"),
    "duplicate_class_names": (3, dict(metadata_dict(), class_names=["a", "a", "b"]), "duplicates"),
    "crop_larger_than_resize": (3, _preprocess(crop=300), "must not exceed resize"),
    "negative_std": (3, _preprocess(std=[0.2, -0.2, 0.2]), "std must be positive"),
    "mean_out_of_range": (3, _preprocess(mean=[0.5, 128, 0.5]), "mean must lie in [0, 1]"),
    "two_numbers_for_mean": (3, _preprocess(mean=[0.5, 0.5]), "mean must be 3 finite numbers"),
    "resize_not_an_integer": (3, _preprocess(resize="256"), "resize must be an integer"),
    "unknown_interpolation": (3, _preprocess(interpolation="lanczos9"), "interpolation must be one of"),
    "missing_preprocess_key": (3, {**metadata_dict(), "preprocess": {"resize": 256}}, "preprocess is missing"),
    "future_format_version": (3, dict(metadata_dict(), format_version=99), "format_version 99 is not supported"),
    "bad_temperature": (3, dict(metadata_dict(), temperature=0), "temperature must be a number"),
    "malformed_gate": (3, dict(metadata_dict(), gate={"knn_k": 3}), "gate is missing"),
    "gate_weighs_other_imagenet_classes": (3, gated_metadata_dict(7), "the ImageNet view outputs 5 classes"),
    "gate_without_imagenet_names": (3, dict(gated_metadata_dict(5), imagenet_class_names=[]),
                                    "imagenet_class_names lists 0"),
    "old_format": (3, dict(metadata_dict(), format_version=1), "--from-model"),
    "unknown_test_time_augmentation": (3, dict(metadata_dict(), test_time_augmentation="ten_crop"),
                                       "test_time_augmentation must be one of none, hflip_mean"),
    "not_json": (3, "{class_names: oops", "is not valid JSON"),
    "json_list": (3, "[1, 2, 3]", "must hold a JSON object"),
    "no_metadata": (3, None, "has no flowerdemo.json metadata"),
}


@pytest.mark.parametrize("case", list(BAD_METADATA))
def test_inconsistent_metadata_is_refused(tmp_path, case):
    outputs, metadata, message = BAD_METADATA[case]
    path = save_model(tmp_path / MODEL_FILE, outputs, metadata)
    with pytest.raises(ModelLoadError) as info:
        FlowerClassifier.load(str(path))
    assert message in str(info.value)


@pytest.mark.parametrize("mirror_average, claimed", [(True, "none"), (False, "hflip_mean")])
def test_metadata_must_say_truly_whether_the_network_mirror_averages(tmp_path, mirror_average, claimed):
    from flowerdemo.core.artifact import save_artifact

    honest = ModelMetadata.from_dict(dict(metadata_dict(), test_time_augmentation="hflip_mean" if mirror_average else "none"))
    lying = ModelMetadata.from_dict(dict(metadata_dict(), test_time_augmentation=claimed))
    network = script_model(TinyBackbone(len(TINY_CLASSES)), TinyImageNetView(), mirror_average=mirror_average)
    save_artifact(network, honest, tmp_path / "honest.pt")
    save_artifact(network, lying, tmp_path / "lying.pt")
    assert FlowerClassifier.load(str(tmp_path / "honest.pt")).metadata.test_time_augmentation != claimed
    with pytest.raises(ModelLoadError, match=f"test_time_augmentation='{claimed}'.*do not belong together"):
        FlowerClassifier.load(str(tmp_path / "lying.pt"))


def test_inconsistent_metadata_is_refused_from_the_hub_too(hub_cache, tmp_path):
    bad = save_model(tmp_path / "bad" / MODEL_FILE, 4, metadata_dict(TINY_CLASSES))
    hub_cache.add(REPO, MAIN_COMMIT, bad.read_bytes(), refs=("main",))
    with pytest.raises(ModelLoadError, match="do not belong together"):
        FlowerClassifier.load(f"hf://{REPO}")


def test_good_tiny_model_loads(tmp_path):
    """The control for the cases above: the same builder with honest metadata loads and predicts."""
    path = save_model(tmp_path / MODEL_FILE, 3, metadata_dict())
    classifier = FlowerClassifier.load(str(path))
    assert classifier.predict(torch.zeros(40, 30, 3, dtype=torch.uint8).numpy(), top_k=2).label in TINY_CLASSES
    assert os.path.basename(classifier.source) == MODEL_FILE
