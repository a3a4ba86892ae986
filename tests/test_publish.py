"""Publishing: everything up to the HTTP call, and clear failures without a token or a reachable Hub."""
from __future__ import annotations

import shutil
from types import SimpleNamespace

import pytest

from flowerdemo.training import publish


@pytest.fixture()
def model_folder(tiny_model_dir, tmp_path):
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir, folder)
    (folder / "README.md").write_text("---\nlicense: apache-2.0\n---\n# card\n")
    return folder


class RecordingApi:
    def __init__(self):
        self.calls = []

    def create_repo(self, repo_id, **kwargs):
        self.calls.append(("create_repo", repo_id, kwargs))

    def upload_folder(self, **kwargs):
        self.calls.append(("upload_folder", kwargs))
        return SimpleNamespace(oid="a" * 40, commit_url="https://huggingface.co/me/flowers/commit/" + "a" * 40)


def test_publish_creates_the_repo_and_uploads_the_folder(model_folder):
    api = RecordingApi()
    info = publish.publish(model_folder, "me/flowers", api=api, private=True)
    assert info.oid == "a" * 40
    assert api.calls[0] == ("create_repo", "me/flowers", {"repo_type": "model", "private": True, "exist_ok": True})
    upload = api.calls[1][1]
    assert upload["repo_id"] == "me/flowers" and upload["folder_path"] == str(model_folder)
    assert "model.pt" in upload["allow_patterns"] and "README.md" in upload["allow_patterns"]


def test_publish_refuses_a_folder_the_app_could_not_load(model_folder):
    (model_folder / "model.pt").write_bytes(b"not a model")
    with pytest.raises(publish.PublishError, match="invalid model"):
        publish.publish(model_folder, "me/flowers", api=RecordingApi())
    (model_folder / "model.pt").unlink()
    with pytest.raises(publish.PublishError, match="flowerdemo.training.export"):
        publish.publish(model_folder, "me/flowers", api=RecordingApi())


def test_missing_token_is_a_clear_error(model_folder, monkeypatch, tmp_path):
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr("huggingface_hub.get_token", lambda: None)
    with pytest.raises(publish.PublishError, match="HF_TOKEN"):
        publish.publish(model_folder, "me/flowers")


def test_unreachable_hub_is_a_clear_error_and_exit_1(model_folder, monkeypatch, capsys):
    from huggingface_hub import HfApi

    # A closed loopback port: the real client code runs up to the connection, which is refused at once.
    api = HfApi(endpoint="http://127.0.0.1:9", token="hf_test")
    with pytest.raises(publish.PublishError, match="unreachable"):
        publish.publish(model_folder, "me/flowers", api=api)

    monkeypatch.setenv("HF_TOKEN", "hf_test")
    monkeypatch.setattr(publish, "publish", lambda *a, **k: (_ for _ in ()).throw(publish.PublishError("the Hub at x is unreachable")))
    args = publish.get_args_parser().parse_args(["--folder", str(model_folder), "--repo", "me/flowers"])
    assert publish.main(args) == 1
    assert "publish failed: the Hub at x is unreachable" in capsys.readouterr().err
