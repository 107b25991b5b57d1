"""Training and evaluation data from several sources: a small spec, each source's own held-out split.

A spec is JSON (`models/toxicity/sources.json` is v3's), or one `--data` file per source:

    {"sources": [
      {"name": "dynahate", "path": "dynahate_vidgen2021.csv",
       "split_column": "split", "splits": {"train": ["train"], "test": ["test"]},
       "labels": {"toxic": ["toxic"], "clean": ["clean"]}, "weight": 1.0, "cap": null,
       "use": "train"},
      {"name": "functional", "kind": "functional"}
    ]}

- `path` is relative to the data root (`--data-root`, default `../shared/data` beside the repo).
- `labels` maps the label column's values (compared as text) to toxic and clean; a value in
  neither list is refused. The default takes `1`/`toxic` and `0`/`clean`.
- The held-out split is the source's own `split_column` where it has one (a validation part is
  carved from its train rows, seeded, if it names none), else a seeded stratified 64/16/20 split.
  Either way it depends only on the source's own rows, so adding a source never moves another's
  test rows.
- `weight` multiplies each training row's sample weight; `cap` keeps at most that many training
  rows (a seeded sample); `use: "eval"` sources are evaluated, never trained on.
- `kind: "functional"` is the train half of the repo's functional suite (`functional.py`): its
  held-out half is never trained on, whatever the spec says.
- `categories` gives a source's finer labels, for the category heads a model may declare:
  `{"hate": {"column": "category", "positive": ["hate"], "negative": ["neither", "offensive"]}}`.
  A row whose value is in neither list is unknown for that category: no head trains or is judged on
  it. The functional suite labels its own (`functional.py`).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .errors import DatasetError
from .layout import DEFAULT_DATA_ROOT

SPLITS = ("train", "validation", "test")
DEFAULT_LABELS = {"toxic": ("1", "toxic"), "clean": ("0", "clean")}
USES = ("train", "eval")
KINDS = ("file", "functional")
_SOURCE_KEYS = {"name", "path", "kind", "text_column", "label_column", "labels", "split_column", "splits"}
_SOURCE_KEYS |= {"weight", "cap", "use", "format", "license", "attribution", "origin", "categories"}
UNKNOWN = -1  # a row's category label where its source does not say


@dataclass(frozen=True)
class Source:
    name: str
    path: str = ""
    kind: str = "file"
    text_column: str = "text"
    label_column: str = "label"
    labels: dict[str, tuple[str, ...]] = field(default_factory=lambda: dict(DEFAULT_LABELS))
    split_column: str | None = None
    splits: dict[str, tuple[str, ...]] = field(default_factory=dict)
    weight: float = 1.0
    cap: int | None = None
    use: str = "train"
    format: str | None = None
    # Credit that the model card must carry (the licenses ask for attribution).
    license: str | None = None
    attribution: str | None = None
    origin: str | None = None
    # {category: {"column", "positive", "negative"}}: how this source's rows are labelled per category.
    categories: dict[str, dict[str, Any]] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        """What the manifest records of the spec (paths as given, never resolved)."""
        return {
            "name": self.name,
            "kind": self.kind,
            "file": os.path.basename(self.path) if self.path else None,
            "weight": self.weight,
            "cap": self.cap,
            "use": self.use,
            "license": self.license,
            "attribution": self.attribution,
            "origin": self.origin,
        }


@dataclass
class SourceData:
    """One source's rows, labels (1 toxic) and split ('train' / 'validation' / 'test'), and per
    category 1, 0 or UNKNOWN for each row."""

    source: Source
    texts: list[str]
    labels: np.ndarray
    split: np.ndarray
    sha256: str
    categories: dict[str, np.ndarray] = field(default_factory=dict)

    def part(self, name: str) -> tuple[list[str], np.ndarray]:
        index = self._index(name)
        return [self.texts[i] for i in index], self.labels[index]

    def category_part(self, name: str, category: str) -> tuple[np.ndarray, np.ndarray]:
        """(positions within `part(name)`, labels) of the rows of `name` whose `category` is known."""
        labels = self.categories[category][self._index(name)]
        known = np.flatnonzero(labels != UNKNOWN)
        return known, labels[known]

    def _index(self, name: str) -> np.ndarray:
        return np.arange(len(self.texts)) if name == "all" else np.flatnonzero(self.split == name)


def source_from_dict(entry: dict[str, Any]) -> Source:
    if not isinstance(entry, dict) or not isinstance(entry.get("name"), str) or not entry["name"]:
        raise DatasetError(f"each source needs a name: {entry!r}")
    unknown = set(entry) - _SOURCE_KEYS
    if unknown:
        raise DatasetError(f"source {entry['name']!r}: unknown keys {sorted(unknown)}")
    values = dict(entry)
    kind = values.get("kind", "file")
    if kind not in KINDS:
        raise DatasetError(f"source {entry['name']!r}: kind must be one of {KINDS}")
    if kind == "file" and not values.get("path"):
        raise DatasetError(f"source {entry['name']!r}: a file source needs a path")
    if values.get("use", "train") not in USES:
        raise DatasetError(f"source {entry['name']!r}: use must be one of {USES}")
    if "labels" in values:
        labels = values["labels"]
        if not isinstance(labels, dict) or set(labels) != {"toxic", "clean"}:
            raise DatasetError(f"source {entry['name']!r}: labels must map 'toxic' and 'clean' to lists of values")
        values["labels"] = {key: tuple(str(v) for v in labels[key]) for key in ("toxic", "clean")}
    if "splits" in values:
        splits = values["splits"]
        if not isinstance(splits, dict) or not set(splits) <= set(SPLITS) or "test" not in splits:
            raise DatasetError(f"source {entry['name']!r}: splits maps train/validation/test (test required)")
        values["splits"] = {key: tuple(str(v) for v in vals) for key, vals in splits.items()}
    weight = values.get("weight", 1.0)
    if isinstance(weight, bool) or not isinstance(weight, int | float) or not weight > 0:
        raise DatasetError(f"source {entry['name']!r}: weight must be a positive number")
    cap = values.get("cap")
    if cap is not None and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
        raise DatasetError(f"source {entry['name']!r}: cap must be a positive whole number or null")
    values["weight"] = float(weight)
    values["categories"] = _category_specs(entry["name"], values.get("categories", {}))
    return Source(**values)


def _category_specs(name: str, specs: Any) -> dict[str, dict[str, Any]]:
    if not isinstance(specs, dict):
        raise DatasetError(f"source {name!r}: categories must map each category to its labelling")
    checked = {}
    for category, spec in specs.items():
        if (
            not isinstance(spec, dict)
            or set(spec) != {"column", "positive", "negative"}
            or not isinstance(spec["column"], str)
            or not all(isinstance(spec[key], list) and spec[key] for key in ("positive", "negative"))
        ):
            raise DatasetError(f"source {name!r}: category {category!r} needs column, positive and negative lists")
        checked[category] = {
            "column": spec["column"],
            **{k: tuple(map(str, spec[k])) for k in ("positive", "negative")},
        }
    return checked


def category_labels(values: list, spec: dict[str, Any]) -> np.ndarray:
    """1 for a positive value, 0 for a negative one, UNKNOWN otherwise (compared as text)."""
    positive, negative = set(spec["positive"]), set(spec["negative"])
    as_text = [str(value).strip() for value in values]
    return np.array([1 if v in positive else 0 if v in negative else UNKNOWN for v in as_text], dtype=np.int64)


def read_spec(path: str | os.PathLike) -> list[Source]:
    try:
        spec = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read the data spec {path}: {exc}") from None
    entries = spec.get("sources") if isinstance(spec, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DatasetError(f'{path}: expected {{"sources": [...]}} with at least one source')
    sources = [source_from_dict(entry) for entry in entries]
    names = [source.name for source in sources]
    if len(set(names)) != len(names):
        raise DatasetError(f"{path}: source names must be unique, got {names}")
    return sources


def resolve_path(source: Source, data_root: str | os.PathLike | None) -> Path:
    path = Path(source.path)
    return path if path.is_absolute() else Path(data_root or DEFAULT_DATA_ROOT) / path


def _map_labels(values: list, source: Source, path: Path) -> np.ndarray:
    as_text = [str(value).strip() for value in values]
    toxic, clean = set(source.labels["toxic"]), set(source.labels["clean"])
    unknown = sorted({value for value in as_text if value not in toxic and value not in clean})
    if unknown:
        raise DatasetError(f"{path}: labels {unknown[:5]} are neither toxic {sorted(toxic)} nor clean {sorted(clean)}")
    return np.array([value in toxic for value in as_text], dtype=np.int64)


def seeded_split(labels: np.ndarray, seed: int, test_size: float, validation_size: float) -> np.ndarray:
    """The split `training.split` has always made (stratified test, then validation), as labels per row."""
    from sklearn.model_selection import train_test_split

    index = np.arange(len(labels))
    stratify = labels if np.bincount(labels, minlength=2).min() >= 2 else None
    rest, test = train_test_split(index, test_size=test_size, stratify=stratify, random_state=seed)
    rest_stratify = labels[rest] if stratify is not None else None
    train, validation = train_test_split(rest, test_size=validation_size, stratify=rest_stratify, random_state=seed)
    split = np.empty(len(labels), dtype=object)
    split[train], split[validation], split[test] = "train", "validation", "test"
    return split


def _column_split(
    values: list, source: Source, labels: np.ndarray, seed: int, validation_size: float, path
) -> np.ndarray:
    from sklearn.model_selection import train_test_split

    names = {str(v): part for part, vals in source.splits.items() for v in vals}
    split = np.array([names.get(str(value), "") for value in values], dtype=object)
    if (split == "").any():
        unknown = sorted({str(v) for v, s in zip(values, split, strict=True) if not s})
        raise DatasetError(f"{path}: split values {unknown[:5]} are not in the source's splits")
    if "validation" not in source.splits:
        train = np.flatnonzero(split == "train")
        _, validation = train_test_split(train, test_size=validation_size, stratify=labels[train], random_state=seed)
        split[validation] = "validation"
    return split


def load_source(
    source: Source,
    data_root: str | os.PathLike | None = None,
    seed: int = 42,
    test_size: float = 0.2,
    validation_size: float = 0.2,
) -> SourceData:
    """Read one source and give every row its split."""
    if source.kind == "functional":
        from .functional import training_source

        return training_source(source, seed, validation_size)
    import pandas as pd

    from .artifacts import sha256_file
    from .dataset import detect_format

    path = resolve_path(source, data_root)
    wanted = [source.text_column, source.label_column] + ([source.split_column] if source.split_column else [])
    wanted += [spec["column"] for spec in source.categories.values()]
    try:
        if detect_format(path, source.format) == "csv":
            frame = pd.read_csv(path, keep_default_na=False, dtype=str)
        else:
            frame = pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise DatasetError(f"cannot read source {source.name!r} at {path}: {exc}") from None
    missing = [column for column in wanted if column not in frame.columns]
    if missing:
        raise DatasetError(f"{path}: no column {missing[0]!r} (columns: {list(frame.columns)})")
    texts = frame[source.text_column].tolist()
    if not all(isinstance(text, str) for text in texts):
        raise DatasetError(f"{path}: column {source.text_column!r} must hold only strings")
    labels = _map_labels(frame[source.label_column].tolist(), source, path)
    if source.split_column:
        split = _column_split(frame[source.split_column].tolist(), source, labels, seed, validation_size, path)
    else:
        split = seeded_split(labels, seed, test_size, validation_size)
    categories = {
        name: category_labels(frame[spec["column"]].tolist(), spec) for name, spec in source.categories.items()
    }
    return SourceData(source, texts, labels, split, sha256_file(path), categories)


def load_spec(path: str | os.PathLike, data_root: str | os.PathLike | None = None, progress=None) -> list[SourceData]:
    """Every source of a spec, read and split; `progress(message)` hears each one."""
    datas = []
    for source in read_spec(path):
        if progress:
            progress(f"reading source {source.name}")
        datas.append(load_source(source, data_root))
    return datas


def combined_sha256(datas: list[SourceData]) -> str:
    """One digest over every source's name and file digest, in spec order."""
    digest = hashlib.sha256()
    for data in datas:
        digest.update(f"{data.source.name}\x00{data.sha256}\x01".encode())
    return digest.hexdigest()
