"""The README is the user's door: short, its example prints what the app says today, its headline figures are
the bundled model's own (and the page's), and it names no path of the machine that made it."""
from __future__ import annotations

import contextlib
import io
import re

import pytest

from flowerdemo.serve.predict import FlowerClassifier
from flowerdemo.training.model_card import headline_rows
from flowerdemo.ui.presenters import model_markdown, percent

from conftest import ROOT

README = (ROOT / "README.md").read_text(encoding="utf-8")


def code_block_after(marker: str, language: str) -> str:
    start = README.index(marker)
    match = re.search(rf"```{language}\n(.*?)```", README[start:], re.S)
    assert match, f"no ```{language} block after {marker!r}"
    return match.group(1)


@pytest.fixture(scope="module")
def bundled():
    return FlowerClassifier.load(str(ROOT / "weights"))


def test_the_readme_is_short_and_names_no_machine_path():
    assert 140 <= len(README.splitlines()) <= 210  # about 150-200 lines, the Space front matter besides
    assert "../shared" not in README and "/work/" not in README and "issue" not in README.lower()


def test_the_layout_comes_early_and_the_two_commands_are_there():
    assert README.index("## Project layout") < README.index("## Using the page") < README.index("## Model")
    assert "pip install -r requirements.txt\npython app.py" in README


@pytest.mark.slow
def test_the_python_example_prints_what_the_readme_says(bundled, monkeypatch):
    code = code_block_after("## Call it from Python", "python")
    shown = code_block_after("prints (", "text").strip()
    monkeypatch.chdir(ROOT)
    monkeypatch.setattr(FlowerClassifier, "load", classmethod(lambda cls, *a, **k: bundled))  # loaded once per module
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        exec(compile(code, "README.md", "exec"), {})
    assert printed.getvalue().strip() == shown


def test_the_headline_figures_are_the_bundled_models_own(bundled):
    rows = headline_rows(bundled.metadata)
    assert len(rows) >= 5
    for name, value in rows:
        assert f"| {name} | {value} |" in README, name


def test_the_page_shows_the_same_test_accuracy_as_the_readme(bundled):
    top1 = bundled.metadata.metrics["test"]["top1"]
    assert f"top-1 **{percent(top1)}**" in model_markdown(bundled)
    readme_top1 = re.search(r"\| Flowers-102 test: top-1 / top-5 \| ([\d.]+)%", README).group(1)
    assert abs(float(readme_top1) - 100 * top1) < 0.005


def test_the_model_history_names_the_bundled_model_file():
    # a new bundled model without its history entry fails here, so the page cannot go stale silently
    import hashlib

    digest = hashlib.sha256((ROOT / "weights" / "model.pt").read_bytes()).hexdigest()[:12]
    history = (ROOT / "docs" / "model-history.md").read_text(encoding="utf-8")
    current = [line for line in history.splitlines() if line.startswith("## Current bundled model")]
    assert len(current) == 1 and f"SHA-256 `{digest}" in current[0]
