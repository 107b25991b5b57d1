"""The functional suite: deterministic, half held out by template, wide enough to mean something."""

from collections import Counter

from shared_features.functional import functionalities, generate, half_of, is_validation_template, perturb


def test_the_suite_is_the_same_on_every_call():
    assert generate() == generate()


def test_half_of_the_templates_of_every_functionality_are_held_out():
    for functionality in functionalities():
        halves = Counter(half_of(i) for i in range(len(functionality["templates"])))
        assert abs(halves["train"] - halves["heldout"]) <= 1, functionality["id"]
        assert halves["heldout"] >= 3, functionality["id"]
    cases = generate()
    assert {c.half for c in cases} == {"train", "heldout"}
    assert all(c.half == half_of(c.template) for c in cases)


def test_no_held_out_case_is_also_a_train_case():
    train = {c.text for c in generate("train")}
    assert not train & {c.text for c in generate("heldout")}


def test_validation_templates_come_from_the_train_half_only():
    assert all(not is_validation_template(i) for i in range(1, 40, 2))
    assert any(is_validation_template(i) for i in range(0, 40, 2))


def test_at_least_25_functionalities_and_10_groups_on_both_sides():
    cases = generate("heldout")
    assert len({c.functionality for c in cases}) >= 25
    assert len({c.group for c in cases if c.group}) >= 10
    assert {c.label for c in cases} == {0, 1}
    for side in (0, 1):  # both sides cross the groups
        assert len({c.group for c in cases if c.group and c.label == side}) >= 10


def test_spelling_variants_really_vary_the_word():
    import random

    rng = random.Random(0)
    assert perturb("disgusting", "char_swap", rng) != "disgusting"
    assert len(perturb("disgusting", "char_del", rng)) == len("disgusting") - 1
    assert perturb("hate", "space_add", rng) == "h a t e"
    assert perturb("hate", "leet", rng) != "hate"
    spelled = [c.text for c in generate() if c.functionality == "spell_space_del"]
    assert spelled and all("[" not in text for text in spelled)
