"""Who each class is: its common name, scientific name, genus and family, and the other names people type.

The curated table is ``flowerdemo/assets/taxonomy.csv`` (sources and choices: ``docs/taxonomy.md``). The exporter
writes the rows into ``model.pt``'s metadata, so a model from the Hub carries its own taxonomy; a model exported
before there was one loads with ``taxonomy = None`` and answers at species rank only.
"""
from __future__ import annotations

import csv
import re
import unicodedata
from dataclasses import dataclass, field
from enum import Enum
from pathlib import Path
from typing import Iterable, Sequence

import numpy as np

from .verdict import Verdict

TAXONOMY_FILE = Path(__file__).resolve().parent.parent / "assets" / "taxonomy.csv"
# Common names of genera and families ("pinks" for Dianthus), for answers at those ranks: latin,common_name
GROUP_NAMES_FILE = TAXONOMY_FILE.with_name("taxon_groups.csv")
COLUMNS = ("class_name", "common_name", "scientific_name", "scientific_rank", "genus", "family", "other_names")


class Rank(str, Enum):
    """A taxonomic rank an answer can name; the values are what JSON and CSV carry."""

    SPECIES = Verdict.SPECIES.value  # the same word as the species verdict: one of the known species
    GENUS = "genus"
    FAMILY = "family"

    def __str__(self) -> str:
        return self.value

    __format__ = str.__format__


SCIENTIFIC_RANKS = (Rank.SPECIES.value, Rank.GENUS.value)  # a class's scientific name is a binomial or a genus


class TaxonomyError(ValueError):
    """A taxonomy table (the bundled CSV or a model's metadata) is incomplete or inconsistent."""


@dataclass(frozen=True)
class Taxon:
    class_name: str  # the dataset's name, as the model's class_names has it
    common_name: str  # what a person reads: names what the photos show
    scientific_name: str  # a binomial, or the genus where the class is a cultivar group or genus-level label
    scientific_rank: str  # the rank of scientific_name: one of SCIENTIFIC_RANKS
    genus: str
    family: str
    other_names: tuple = ()  # other common names people type ("calendula", "california poppy")

    def to_dict(self) -> dict:
        return {"class_name": self.class_name, "common_name": self.common_name,
                "scientific_name": self.scientific_name, "scientific_rank": self.scientific_rank,
                "genus": self.genus, "family": self.family, "other_names": list(self.other_names)}

    @classmethod
    def from_dict(cls, data) -> "Taxon":
        if not isinstance(data, dict):
            raise TaxonomyError(f"a taxonomy row must be an object, got {type(data).__name__}")
        missing = [name for name in COLUMNS[:-1] if not isinstance(data.get(name), str) or not data[name].strip()]
        if missing:
            raise TaxonomyError(f"taxonomy row {data.get('class_name')!r} lacks {', '.join(missing)}")
        if data["scientific_rank"] not in SCIENTIFIC_RANKS:
            raise TaxonomyError(f"taxonomy row {data['class_name']!r}: scientific_rank must be one of "
                                f"{', '.join(SCIENTIFIC_RANKS)}, got {data['scientific_rank']!r}")
        others = data.get("other_names") or []
        if isinstance(others, str):
            others = [name for name in others.split("|") if name.strip()]
        if not isinstance(others, list) or not all(isinstance(name, str) for name in others):
            raise TaxonomyError(f"taxonomy row {data['class_name']!r}: other_names must be a list of strings")
        return cls(**{name: data[name].strip() for name in COLUMNS[:-1]},
                   other_names=tuple(name.strip() for name in others))

    def display(self) -> str:
        """"common name (*Scientific name*)", in Markdown."""
        return f"{self.common_name} (*{self.scientific_name}*)"


@dataclass(frozen=True)
class Taxonomy:
    """One :class:`Taxon` per class, in the model's class order, with the genus and family of each class as
    index arrays for rolling probabilities up the ranks."""

    taxa: tuple
    group_names: dict = field(default_factory=dict)  # {genus or family (Latin): common name}

    def __post_init__(self) -> None:
        if not isinstance(self.group_names, dict) or not all(
                isinstance(k, str) and isinstance(v, str) and v.strip() for k, v in self.group_names.items()):
            raise TaxonomyError("taxonomy group_names must map Latin names to non-empty common names")
        families: dict[str, str] = {}
        for taxon in self.taxa:
            if taxon.scientific_name.split()[0] != taxon.genus:
                raise TaxonomyError(f"{taxon.class_name!r}: genus {taxon.genus!r} is not the first word of "
                                    f"{taxon.scientific_name!r}")
            if families.setdefault(taxon.genus, taxon.family) != taxon.family:
                raise TaxonomyError(f"genus {taxon.genus!r} is put in two families: {families[taxon.genus]!r} "
                                    f"and {taxon.family!r}")

    @property
    def class_names(self) -> tuple:
        return tuple(taxon.class_name for taxon in self.taxa)

    @property
    def genera(self) -> tuple:
        return tuple(sorted({taxon.genus for taxon in self.taxa}))

    @property
    def families(self) -> tuple:
        return tuple(sorted({taxon.family for taxon in self.taxa}))

    def members(self, rank: str) -> dict[str, np.ndarray]:
        """{genus or family name: the class indices in it}."""
        if rank not in ("genus", "family"):
            raise ValueError(f"rank must be genus or family, got {rank!r}")
        groups: dict[str, list[int]] = {}
        for index, taxon in enumerate(self.taxa):
            groups.setdefault(getattr(taxon, rank), []).append(index)
        return {name: np.asarray(indices) for name, indices in groups.items()}

    def family_of_genus(self, genus: str) -> str:
        return next(taxon.family for taxon in self.taxa if taxon.genus == genus)

    def check_matches(self, class_names: Sequence[str]) -> None:
        if tuple(class_names) != self.class_names:
            missing = [name for name in class_names if name not in self.class_names]
            raise TaxonomyError("the taxonomy does not list the model's classes in the model's order"
                                + (f" (missing: {', '.join(missing[:5])})" if missing else ""))

    def find(self, query: str) -> list[int]:
        """Class indices whose dataset name, common name, scientific name or any other name contains ``query``
        (case, accents and punctuation ignored); exact matches first. What "Not right: it is ..." searches."""
        wanted = _folded(query)
        if not wanted:
            return []
        exact, partial = [], []
        for index, taxon in enumerate(self.taxa):
            names = [_folded(name) for name in self.search_names(index)]
            if wanted in names:
                exact.append(index)
            elif any(wanted in name for name in names):
                partial.append(index)
        return exact + partial

    def search_names(self, index: int) -> tuple:
        taxon = self.taxa[index]
        return (taxon.class_name, taxon.common_name, taxon.scientific_name, *taxon.other_names)

    def to_dict(self) -> dict:
        return {"taxa": [taxon.to_dict() for taxon in self.taxa], "group_names": dict(sorted(self.group_names.items()))}

    @classmethod
    def from_dict(cls, data) -> "Taxonomy":
        if not isinstance(data, dict) or not isinstance(data.get("taxa"), list) or not data["taxa"]:
            raise TaxonomyError("taxonomy must be an object with a non-empty list of taxa")
        return cls(tuple(Taxon.from_dict(row) for row in data["taxa"]), dict(data.get("group_names") or {}))

    @classmethod
    def from_csv(cls, path: str | Path = TAXONOMY_FILE, class_names: Iterable[str] | None = None) -> "Taxonomy":
        """The curated table; with ``class_names``, its rows in that order (every class must be listed)."""
        with open(path, newline="", encoding="utf-8") as handle:
            rows = {row["class_name"]: row for row in csv.DictReader(handle)}
        order = list(class_names) if class_names is not None else list(rows)
        missing = [name for name in order if name not in rows]
        if missing:
            raise TaxonomyError(f"{Path(path).name} has no row for {', '.join(missing[:5])}"
                                + (f" and {len(missing) - 5} more" if len(missing) > 5 else ""))
        group_names = {}
        if Path(path).resolve() == TAXONOMY_FILE and GROUP_NAMES_FILE.is_file():
            with open(GROUP_NAMES_FILE, newline="", encoding="utf-8") as handle:
                group_names = {row["latin"]: row["common_name"] for row in csv.DictReader(handle)}
        return cls(tuple(Taxon.from_dict(rows[name]) for name in order), group_names)


def _folded(text: str) -> str:
    """Lower case, accents stripped, punctuation and runs of space made one space: "Colt's-foot" -> "colt s foot"."""
    plain = unicodedata.normalize("NFKD", str(text)).encode("ascii", "ignore").decode("ascii").lower()
    return " ".join(re.sub(r"[^a-z0-9]+", " ", plain).split())
