"""P(yes) from the first token's top log-probabilities, and the question text."""

from __future__ import annotations

import math

import pytest

from consist_semantic.questions import article, label_text, render
from consist_semantic.yesno import normalise_token, yes_no_from_logprobs, yes_no_from_text


def lp(p: float) -> float:
    return math.log(p)


def test_spellings_of_yes_and_no_are_summed():
    top = [("Yes", lp(0.5)), (" yes", lp(0.1)), ("▁YES", lp(0.05)), ("No", lp(0.2)), ("Ġno", lp(0.05)), ("The", lp(0.1))]
    yn = yes_no_from_logprobs(top)
    assert yn.coverage == pytest.approx(0.9)
    assert yn.p_yes == pytest.approx(0.65 / 0.9)
    assert yn.method == "logprobs"


@pytest.mark.parametrize("token, expected", [(" Yes.", "yes"), ("▁yes", "yes"), ("Ġno", "no"), ('"No"', "no"), ("YES!", "yes"), ("\nno", "no")])
def test_normalise_token(token, expected):
    assert normalise_token(token) == expected


def test_split_tokenisations_count():
    # a tokeniser that splits "Yes" into "Y" + "es" puts the mass on "Y"
    yn = yes_no_from_logprobs([("Y", lp(0.7)), ("N", lp(0.2)), ("I", lp(0.1))])
    assert yn.p_yes == pytest.approx(0.7 / 0.9)
    assert yn.coverage == pytest.approx(0.9)


def test_chosen_token_missing_from_top_is_added():
    yn = yes_no_from_logprobs([("No", lp(0.3))], chosen=("Yes", lp(0.6)))
    assert yn.p_yes == pytest.approx(0.6 / 0.9)
    assert yn.token == "Yes"


def test_no_yes_no_mass_means_zero_coverage():
    yn = yes_no_from_logprobs([("<think>", lp(0.99)), ("The", lp(0.01))])
    assert yn.coverage == 0.0 and yn.p_yes == 0.5


def test_minus_infinity_is_zero_mass_and_nan_is_invalid():
    yn = yes_no_from_logprobs([("Yes", float("-inf")), ("No", lp(0.5))])
    assert yn.p_yes == 0.0 and yn.coverage == pytest.approx(0.5)
    yn = yes_no_from_logprobs([("Yes", float("-inf")), ("No", lp(0.5)), ("yes", float("nan"))])
    assert yn.method == "invalid" and not yn.answered  # not a distribution: the checker abstains


@pytest.mark.parametrize("text, p", [("Yes", 1.0), ("no.", 0.0), ("Yes, it is a cat.", 1.0), ("<think>hmm</think> No", 0.0), ("NO", 0.0)])
def test_text_fallback(text, p):
    yn = yes_no_from_text(text)
    assert yn is not None and yn.p_yes == p and yn.coverage is None and yn.method == "text"


@pytest.mark.parametrize("text", ["", "The picture shows a cat", "Maybe", "N of the images"])
def test_text_fallback_refuses_non_answers(text):
    assert yes_no_from_text(text) is None


@pytest.mark.parametrize(
    "words, art",
    [
        ("owl", "an"),
        ("cat", "a"),
        ("unicorn", "a"),
        ("umbrella", "an"),
        ("hour glass", "an"),
        ("horse", "a"),
        ("FBI van", "an"),
        ("NASA rocket", "a"),
        ("the Eiffel Tower", ""),
        ("8 ball", "an"),
        ("European city", "a"),
        ("one-way sign", "a"),
        ("utensil", "a"),
    ],
)
def test_articles(words, art):
    assert article(words) == art


def test_render_reads_labels_as_words():
    assert render("radcliffe_camera") == "Does the picture show a radcliffe camera? Answer yes or no."
    assert render("owl").startswith("Does the picture show an owl?")
    assert render("the_eiffel_tower").startswith("Does the picture show the eiffel tower?")
    assert render("x", "Is this {a} {label}?", text="Eiffel Tower") == "Is this an Eiffel Tower?"
    assert label_text("a--b__c") == "a b c"
