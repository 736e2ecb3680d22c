"""How far a shadowed answer from the target agrees with the baseline's. Pure.

The score is in [0, 1] and is what `quantrollout_router_shadow_agreement_ratio` observes:

- **Greedy requests** (`temperature` given and equal to 0): decoding is deterministic, so the
  faithful comparison is **exact match**: 1.0 if the two texts are identical, else 0.0. A
  quantized tier that changes even one token of a greedy answer scores 0 for that request; the
  rule's threshold (e.g. mean >= 0.9) says how often that may happen.
- **Sampled requests** (any other temperature, or none given: vLLM then samples at 1.0): two
  samples of even the same model differ, so the score is the **F1 over word multisets**: words
  are runs of letters/digits, case-folded; `overlap` is the size of the multiset intersection;
  `F1 = 2 * overlap / (len(a) + len(b))`. 1.0 for the same words in any order, 0.0 for no word
  in common, and 1.0 when both answers are empty.

Only the first choice (`index` 0) of each answer is compared.
"""

from __future__ import annotations

import re
from collections import Counter
from typing import Any

_WORD = re.compile(r"\w+")


def is_greedy(request: dict[str, Any]) -> bool:
    """True iff the request asks for greedy decoding (`temperature: 0`)."""
    temperature = request.get("temperature")
    return (
        isinstance(temperature, int | float)
        and not isinstance(temperature, bool)
        and temperature == 0
    )


def word_f1(a: str, b: str) -> float:
    """F1 over the multisets of case-folded words of `a` and `b`."""
    wa, wb = Counter(_WORD.findall(a.casefold())), Counter(_WORD.findall(b.casefold()))
    total = sum(wa.values()) + sum(wb.values())
    if total == 0:
        return 1.0
    overlap = sum((wa & wb).values())
    return 2 * overlap / total


def agreement(baseline: str, target: str, greedy: bool) -> float:
    """The agreement score of the target's answer with the baseline's (see the module doc)."""
    if baseline == target:
        return 1.0
    if greedy:
        return 0.0
    return word_f1(baseline, target)
