"""Deterministic answer text: the words a simulated model says.

A "token" is a whitespace-separated word. The normal answer is a pure function of the prompt
(words picked by a hash of it), so every simulator, whatever its tier, answers the same prompt
with the same words; the faulty answers (refusal, repetition loop, divergent answer) are pure
functions of the prompt too. Nothing here does I/O or keeps state.
"""

from __future__ import annotations

import hashlib

REFUSAL = "I'm sorry, but I can't help with that."

DEFAULT_LENGTH = 32  # mean length of a normal answer, in tokens
_LENGTH_SPREAD = 8  # normal answers are DEFAULT_LENGTH +- this many tokens
LOOP_GRAM = 4  # a repetition loop repeats one 4-gram ...
LOOP_REPEATS = 12  # ... this many times when max_tokens does not cut it short

# Words of normal answers. None of them reads as a refusal ("sorry", "cannot", ...).
_NORMAL_WORDS = """
    the model answers with a clear and careful summary of each point that matters most for
    this question so readers can follow every step from data to result while checking
    numbers against known values in practice teams often compare several options before
    they choose one approach because costs latency quality and risk all change over time
    memory bandwidth limits throughput on large batches yet smaller weights help caches hold
    more context which improves speed for long prompts under steady load good tests measure
    outcomes rather than guesses so results stay stable across runs and releases
"""
# Words of divergent answers: disjoint from the normal ones, so a divergent answer shares no
# word with the normal answer and any agreement measure sees the disagreement.
_DIVERGENT_WORDS = """
    purple elephants dance quietly beneath frozen volcano gardens where seven copper owls
    juggle lemon lanterns near ancient marble bridges humming forgotten lullabies toward
    distant crimson harbors filled by velvet submarines plus sleepy giraffe astronauts
"""
VOCABULARY = tuple(dict.fromkeys(_NORMAL_WORDS.split()))
DIVERGENT_VOCABULARY = tuple(dict.fromkeys(_DIVERGENT_WORDS.split()))


def _hash(*parts: str) -> int:
    digest = hashlib.blake2b("\x1f".join(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _words(vocabulary: tuple[str, ...], key: str, salt: str, count: int) -> list[str]:
    return [vocabulary[_hash(salt, key, str(i)) % len(vocabulary)] for i in range(count)]


def count_tokens(text: str) -> int:
    return len(text.split())


def answer_length(key: str, scale: float = 1.0) -> int:
    """The length of the normal answer to `key` (a prompt), in tokens: about DEFAULT_LENGTH,
    times `scale`, at least 1."""
    base = DEFAULT_LENGTH - _LENGTH_SPREAD + _hash("length", key) % (2 * _LENGTH_SPREAD + 1)
    return max(1, round(base * scale))


def normal_answer(key: str, length: int) -> list[str]:
    return _words(VOCABULARY, key, "normal", length)


def divergent_answer(key: str, length: int) -> list[str]:
    return _words(DIVERGENT_VOCABULARY, key, "divergent", length)


def refusal_answer() -> list[str]:
    return REFUSAL.split()


def repetition_answer(key: str, length: int = LOOP_GRAM * LOOP_REPEATS) -> list[str]:
    """The same 4-gram over and over, `length` tokens long (a loop runs until it is cut)."""
    gram = normal_answer(key, LOOP_GRAM)
    return [gram[i % LOOP_GRAM] for i in range(length)]


def as_chunks(tokens: list[str]) -> list[str]:
    """The text pieces a stream sends, one per token: joined, they are the answer text."""
    return [token if i == 0 else " " + token for i, token in enumerate(tokens)]
