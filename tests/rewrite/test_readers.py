"""Other readers' checks, and a campaign's copies checked from the last (rewrite/readers.py)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest

from beacon_proxy.rewrite.engine import Engine
from beacon_proxy.rewrite.rules import load_rules
from tests.rewrite.test_webmail import U, _message

TEMPLATES = sorted((Path(__file__).resolve().parents[3] / "shared" / "data" / "templates")
                   .glob("*.html"))
RULES = load_rules()


def _edited(doc: bytes, rng: random.Random, alphabet: bytes) -> bytes:
    copy = bytearray(doc)
    for _ in range(rng.randint(1, 3)):
        at = rng.randrange(len(copy))
        copy[at : at + rng.randint(0, 4)] = bytes(
            rng.choice(alphabet) for _ in range(rng.randint(0, 8)))
    return bytes(copy)


@pytest.mark.skipif(not TEMPLATES, reason="no shared templates")
@pytest.mark.parametrize("seed", [1, 2])
def test_a_campaigns_copies_are_checked_as_in_full(seed: int) -> None:
    """An engine that keeps the last part that passed answers every copy as one that
    keeps nothing: the same problems, the same stray URLs."""
    rng = random.Random(seed)
    alphabet = b"abcXYZ019 .@%-" * 4 + b"<>\"'=&/\\:\n!?[]()*" + U.encode()
    warm = Engine(RULES)
    for path in TEMPLATES[:6]:
        doc = path.read_bytes()
        warm.analyse(_message(doc))
        for _ in range(25):
            copy = _message(_edited(doc, rng, alphabet))
            cold = Engine(RULES, templates=0).analyse(copy)
            again = warm.analyse(copy)
            assert again.problems == cold.problems
            assert again.strays == cold.strays
            assert [p.references for p in again.parts] == [p.references for p in cold.parts]


def test_plain_text_that_finishes_a_base_on_its_line_is_checked_in_full() -> None:
    """Session 18's third attack: the base replacer reads "href=http..." anywhere on the
    line of a <base>, plain text too; a copy whose inert difference finishes one is not
    washed from the copy before (which had none)."""
    first = (b'<base target="_blank"><p>Our site: hreX=https://ct.sendgrid.net/wf/ </p>\n'
             b'<p>a</p>\n<p>b</p>\n<p>c</p>\n<img src="open?upn=r1" width="1" height="1">\n')
    second = first.replace(b"hreX", b"href")
    warm = Engine(RULES)
    warm.analyse(_message(first))
    cold = Engine(RULES, templates=0).analyse(_message(second))
    again = warm.analyse(_message(second))
    assert again.problems == cold.problems and again.problems


#: Session 18's fourth attack: the washer's straightened curly quotes and the base
#: replacer's quotes open a value that swallows text or a comment; Masterminds' parser
#: then opens a tag at the "<" where an attribute should start, libxml2 skips a name with
#: "@" to the next blank.  Each loaded the tracker once washed from a "stripped" copy.
REQUOTED = {
    "curly_then_comment": '<p title=\u201ca><!-- " <img alt=">" src={U}> -->x</p>',
    "curly_inside_quotes": '<p title="a \u201c c=">x <!-- <img alt=">" src={U}> --></p>',
    "base_requoting": '<base href="https://shop.example/"><p title="a src=\'b\' c=">x '
                      '<!-- <img alt=">" src={U}> --></p>',
    "curly_then_text": "<p>Hi</p><img title=\u201ca>Quote: \" a@b='x src={U} '.</p>",
    "curly_then_lt": '<img title=\u201ca><!-- " x< ="z a=">" src={U} -->',
}


@pytest.mark.parametrize("case", list(REQUOTED))
def test_markup_the_washer_requotes_into_what_its_parsers_cut_otherwise(case: str) -> None:
    html = REQUOTED[case].replace("{U}", U).encode()
    analysis = Engine(RULES).analyse(_message(html))
    assert analysis.problems and "rewrites into markup its parsers cut otherwise" in (
        analysis.problems[0])


def test_a_campaign_copy_whose_washed_text_is_requoted_is_checked_again() -> None:
    first = ("<p>\u201cHello\u201d, X</p>\n<p>a</p>\n<p>b</p>\n<p>c</p>\n"
             "<p>d</p>\n").encode()
    warm = Engine(RULES)
    warm.analyse(_message(first))
    assert not warm.analyse(_message(first.replace(b"X", b"Y"))).problems  # honest: kept
