"""What the router looks for in an answer: repetition loops and refusals. Pure.

**Repetition loop**: some word 4-gram occurs more than 4 times (5 or more, overlapping
occurrences counted) in the answer. Words are whitespace-separated and compared case-folded,
so "the cat sat on the cat sat on ..." and "the The THE the ..." both count. Quantization
damage typically shows as a degenerate loop; a real answer that repeats one 4-gram five times
(a list of "for each of the ...") is rare enough that the rule compares the rate against the
baseline's anyway.

**Refusal**: the opening of the answer (its first `REFUSAL_WINDOW` characters, case-folded,
curly apostrophes made straight) matches one of `REFUSAL_PATTERNS`. Only the opening, because
a refusal comes first; "I cannot stress enough ..." deep inside a helpful answer is not one.
The patterns are the stock phrases instruction-tuned models refuse with:

- "I'm sorry, but ..." / "I am sorry, but ..." / "Sorry, but I ..."
- "I can't / cannot / can not / won't help|assist|provide|comply|fulfil|do that|answer|create|
  generate|write|share|support|engage"
- "I'm not able to / I am unable to / I'm unable to help|assist|provide|comply|..."
- "As an AI (language model|assistant) ..."
- "I must decline" / "I have to decline" / "I'm not comfortable"
- "I apologize, but ..."
"""

from __future__ import annotations

import re
from collections import Counter

NGRAM = 4
MAX_REPEATS = 4  # a 4-gram seen more often than this is a loop
REFUSAL_WINDOW = 300

_VERBS = (
    r"(?:help|assist|provide|comply|fulfil|fulfill|do that|do this|answer|create|generate|"
    r"write|share|support|engage|give|offer)"
)
REFUSAL_PATTERNS: tuple[re.Pattern[str], ...] = tuple(
    re.compile(p)
    for p in (
        r"\bi(?:'m| am) (?:really |very |so )?sorry,? but\b",
        r"^sorry,? but i\b",
        r"\bi apologi[sz]e,? but\b",
        rf"\bi (?:can't|cannot|can not|won't|will not) (?:\w+ )?{_VERBS}\b",
        rf"\bi(?:'m| am) (?:not able|unable) to (?:\w+ )?{_VERBS}\b",
        r"\bas an ai(?: language model| assistant| model)?\b",
        r"\bi (?:must|have to|need to) (?:respectfully )?decline\b",
        r"\bi(?:'m| am) not comfortable\b",
    )
)


def has_repetition_loop(text: str, n: int = NGRAM, max_repeats: int = MAX_REPEATS) -> bool:
    """True iff some word n-gram occurs more than `max_repeats` times in `text`."""
    words = text.casefold().split()
    if len(words) < n + max_repeats:  # fewer words cannot hold max_repeats + 1 occurrences
        return False
    grams = Counter(zip(*(words[i:] for i in range(n)), strict=False))
    return max(grams.values()) > max_repeats


# A word each pattern needs (each pattern holds one of them): an opening without any of them
# cannot match, and most answers are told apart by these substring tests alone, many times
# cheaper than the patterns' searches.
REFUSAL_WORDS = (
    "sorry", "apologi", "can", "won't", "will not", "able", "as an ai", "decline", "comfortable",
)  # fmt: skip


def is_refusal(text: str) -> bool:
    """True iff the answer opens with one of the stock refusal phrases."""
    opening = text[:REFUSAL_WINDOW].casefold().replace("\u2019", "'").lstrip()
    if not any(word in opening for word in REFUSAL_WORDS):
        return False
    return any(p.search(opening) for p in REFUSAL_PATTERNS)
