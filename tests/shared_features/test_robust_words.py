"""The robust word analyzer (v3's): each folding rule, emoji, clause boundaries, identity terms."""

import pickle

import pytest

from shared_features.text import normalize_text
from shared_features.tokenizers import GROUP_TOKEN, RobustWordNgrams, describe, make_tokenizer

PLAIN = RobustWordNgrams((1, 1))


def words(text: str, analyzer=PLAIN) -> list[str]:
    return analyzer(normalize_text(text))


@pytest.mark.parametrize(
    "variant, canonical",
    [
        ("you 1d10t", "you idiot"),
        ("i h4te w0men", "i hate women"),
        ("i d i o t", "idiot"),
        ("you a$$hole", "you asshole"),
        ("stuuuupid", "stupid"),
        ("f**k you", "fk you"),
        ("f*ck you", "fck you"),
        ("I don't hate them", "I do not hate them"),
    ],
)
def test_spelling_variants_fold_to_the_same_words(variant, canonical):
    folded = words(variant)
    if variant.startswith("stuu"):
        assert folded == ["stuupid"]  # three or more of a letter become two
    elif "*" in variant:
        assert folded == words(canonical) == [canonical.split()[0], "you"]
    else:
        assert folded == [w for w in words(canonical)]


def test_numbers_are_not_read_as_leetspeak():
    assert words("call 555 1234 in 2024") == ["call", "555", "1234", "in", "2024"]


def test_single_letters_are_dropped_unless_three_or_more_in_a_row():
    assert words("i am a bit tired") == ["am", "bit", "tired"]
    assert words("u r a loser") == ["ura", "loser"]


def test_each_emoji_is_one_token_whatever_its_skin_tone():
    assert (
        words("I would love to 🔪 some 👳🏾")
        == words("I would love to 🔪 some 👳🏻")
        == [
            "would",
            "love",
            "to",
            "🔪",
            "some",
            "👳",
        ]
    )


def test_quotation_marks_become_a_token():
    assert words('saying "x y z"') == ["saying", "xxquote", "xyz", "xxquote"]


def test_bigrams_stay_inside_a_clause():
    analyzer = RobustWordNgrams((1, 2))
    assert words("nice day, bad night but fine", analyzer) == [
        "nice",
        "day",
        "nice day",
        "bad",
        "night",
        "bad night",
        "fine",
    ]


def test_identity_terms_become_one_token_and_no_unigram():
    folded = RobustWordNgrams((1, 2), identity_terms=["women", "muslims"])
    assert words("I love women", folded) == ["love", GROUP_TOKEN, f"love {GROUP_TOKEN}"]
    assert words("I love women", folded) == words("I love Muslims", folded)
    blind_mention = RobustWordNgrams((1, 2), identity_terms=["women"], group_unigram=False)
    assert words("women", blind_mention) == []
    assert words("I hate women", blind_mention) == ["hate", f"hate {GROUP_TOKEN}"]


def test_pickles_and_rebuilds_from_its_description():
    analyzer = RobustWordNgrams((1, 2), identity_terms=["women"], group_unigram=False)
    again = pickle.loads(pickle.dumps(analyzer))
    described = describe(analyzer)
    rebuilt = make_tokenizer(described["name"], described["params"])
    text = normalize_text("You 1d10t, women are great 😀")
    assert analyzer(text) == again(text) == rebuilt(text)
    assert describe(rebuilt)["fingerprint"] == described["fingerprint"]


@pytest.mark.parametrize("terms", [["Women"], ["two words"], ["a-b"]])
def test_identity_terms_must_be_single_lower_case_words(terms):
    with pytest.raises(ValueError, match="single lower-case words"):
        RobustWordNgrams((1, 2), identity_terms=terms)
