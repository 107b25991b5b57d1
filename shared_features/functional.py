"""The functional suite: test cases generated from the repo's templates, one functionality at a time.

The templates live in `models/toxicity/eval/functional_templates.json` (CheckList's
minimum-functionality tests, with functionalities after HateCheck: derogation, threats, slurs,
negation, counter-speech, spelling variants, ...), crossed with its identity groups and slot words.

Each functionality's templates alternate: those at even positions form the **train** half, which a
data spec may train on (source `kind: "functional"`); those at odd positions form the **held-out**
half, which nothing trains on or selects with, and which the model card reports. Generation is
deterministic (seeded per template), so the suite is the same on every machine.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from .layout import DEFAULT_MODEL_ROOT

TEMPLATES_FILE = DEFAULT_MODEL_ROOT / "toxicity" / "eval" / "functional_templates.json"
HALVES = ("train", "heldout")
FILLS_PER_GROUP = 2  # slot fillings per (template, group): more words without many near-duplicates
FILLS_UNCROSSED = 8  # slot fillings per template that names no group
_SLOT = re.compile(r"\{(\w+)\}")
_MARKED = re.compile(r"\[([^\]]+)\]")
_LEET = {"a": "4", "e": "3", "i": "1", "o": "0", "s": "5", "t": "7"}


@dataclass(frozen=True)
class Case:
    text: str
    label: int  # 1 toxic
    functionality: str
    group: str | None
    template: int  # position of the template in its functionality's list
    half: str


@cache
def read_templates(path: str = str(TEMPLATES_FILE)) -> dict:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def half_of(template_index: int) -> str:
    return "train" if template_index % 2 == 0 else "heldout"


def _rng(*parts: object) -> random.Random:
    # Seeded by content, so adding a template never changes another template's cases.
    return random.Random(hashlib.sha256("\x00".join(map(str, parts)).encode()).digest())


def perturb(word: str, rule: str, rng: random.Random) -> str:
    """One spelling variant of `word` (letters only are changed; short words stay as they are)."""
    inner = [i for i in range(1, len(word) - 1) if word[i].isalpha()]
    if rule == "char_swap" and len(inner) >= 2:
        i = rng.choice(inner[:-1])
        return word[:i] + word[i + 1] + word[i] + word[i + 2 :]
    if rule == "char_del" and inner:
        i = rng.choice(inner)
        return word[:i] + word[i + 1 :]
    if rule == "space_add":
        return " ".join(word)
    if rule == "leet":
        swappable = [i for i, char in enumerate(word) if char.lower() in _LEET]
        chosen = set(rng.sample(swappable, k=max(1, len(swappable) // 2))) if swappable else set()
        return "".join(_LEET[c.lower()] if i in chosen else c for i, c in enumerate(word))
    return word


def _apply_spelling(text: str, rule: str, rng: random.Random) -> str:
    if rule == "space_del":
        # Join the marked word to its neighbour: "I [hate] women" -> "Ihate women" or "I hatewomen".
        match = _MARKED.search(text)
        before, word, after = text[: match.start()], match.group(1), text[match.end() :]
        if after.startswith(" ") and (rng.random() < 0.5 or not before.endswith(" ")):
            return before + word + after[1:]
        return before.rstrip(" ") + word + after
    return _MARKED.sub(lambda m: " ".join(perturb(w, rule, rng) for w in m.group(1).split(" ")), text)


def _fill(template: str, group: dict | None, slots: dict, rng: random.Random) -> str | None:
    def value(match: re.Match) -> str:
        key = match.group(1)
        if key == "P":
            return group["plural"]
        if key == "O":
            return group["one"]
        if key in ("S", "S1"):
            singular, plural = rng.choice(group["slurs"]).split("|")
            return plural if key == "S" else singular
        return rng.choice(slots[key])

    if group is None and any(key in ("P", "O", "S", "S1") for key in _SLOT.findall(template)):
        return None
    if group is not None and ("{S" in template) and not group["slurs"]:
        return None
    text = _SLOT.sub(value, template)
    return text[0].upper() + text[1:]


def generate(half: str | None = None, path: str = str(TEMPLATES_FILE)) -> list[Case]:
    """Every case of the suite, or of one half. A train case whose text a held-out template also
    makes (a fixed word in one, a slot word in the other) is left out: the halves never share a text."""
    cases = _generate_all(path)
    held = {case.text for case in cases if case.half == "heldout"}
    cases = [case for case in cases if case.half == "heldout" or case.text not in held]
    return cases if half is None else [case for case in cases if case.half == half]


@cache
def _generate_all(path: str) -> tuple[Case, ...]:
    spec = read_templates(path)
    cases: list[Case] = []
    for functionality in spec["functionalities"]:
        fid, label = functionality["id"], int(functionality["label"] == "toxic")
        rule = fid.removeprefix("spell_") if fid.startswith("spell_") else None
        for index, template in enumerate(functionality["templates"]):
            groups = spec["groups"].items() if functionality["crossed_with_groups"] else [(None, None)]
            fills = FILLS_PER_GROUP if functionality["crossed_with_groups"] else FILLS_UNCROSSED
            seen: set[str] = set()
            for group_name, group in groups:
                rng = _rng(fid, index, group_name)
                for _ in range(fills):
                    text = _fill(template, group, spec["slots"], rng)
                    if text is None:
                        break
                    text = _apply_spelling(text, rule, rng) if rule else _MARKED.sub(r"\1", text)
                    if text not in seen:
                        seen.add(text)
                        cases.append(Case(text, label, fid, group_name, index, half_of(index)))
    return tuple(cases)


def functionalities(path: str = str(TEMPLATES_FILE)) -> list[dict]:
    return read_templates(path)["functionalities"]


def is_validation_template(template_index: int) -> bool:
    """Every fourth template of the train half validates: model selection sees templates that no
    training row came from, as the held-out half will be."""
    return template_index % 2 == 0 and (template_index // 2) % 4 == 3


def training_source(source, seed: int, validation_size: float):
    """The train half as a `SourceData`, split by template into train and validation."""
    from .sources import SourceData

    cases = generate("train")
    labels = np.array([case.label for case in cases], dtype=np.int64)
    split = np.array(["validation" if is_validation_template(c.template) else "train" for c in cases], dtype=object)
    digest = hashlib.sha256(TEMPLATES_FILE.read_bytes()).hexdigest()
    return SourceData(source, [case.text for case in cases], labels, split, digest, case_categories(cases))


def case_categories(cases: list[Case]) -> dict[str, np.ndarray]:
    """The suite's labels per category (the label definition's): a toxic case that names a group is
    hate, one aimed at a person is offensive and not hate; a clean case is neither. Whether hate is
    also offensive the suite does not say (UNKNOWN)."""
    from .sources import UNKNOWN

    hate = [0 if not case.label else 1 if case.group else 0 for case in cases]
    offensive = [0 if not case.label else UNKNOWN if case.group else 1 for case in cases]
    return {"hate": np.array(hate, dtype=np.int64), "offensive": np.array(offensive, dtype=np.int64)}
