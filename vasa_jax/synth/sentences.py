"""A small sentence generator for the synthetic speech corpus.

A handful of sentence templates over project-written vocabulary lists gives varied,
mostly natural English: statements, questions, exclamations, numbers, short remarks.
Everything here is plain ASCII so espeak-ng reads it without surprises.
"""
from __future__ import annotations

import numpy as np

# --- vocabulary ------------------------------------------------------------------
NAMES = ("Maya", "Tom", "Lena", "Oscar", "Priya", "Daniel", "Greta", "Samuel", "Nora",
         "Felix", "Ava", "Jonas", "Ruth", "Marco", "Ines", "Peter", "Clara", "Victor",
         "Hana", "Leo")
PEOPLE = ("my brother", "my sister", "our neighbour", "the teacher", "my old friend",
          "the new manager", "a young doctor", "the baker next door", "my grandmother",
          "the bus driver", "a tall stranger", "our team", "the children", "my cousin",
          "the pilot", "a quiet student", "the mayor", "my uncle", "the painter",
          "the engineer")
PRONOUNS = ("I", "we", "they", "you")

# verbs: (base, past, -ing)
VERBS = (
    ("find", "found", "finding"), ("carry", "carried", "carrying"),
    ("paint", "painted", "painting"), ("fix", "fixed", "fixing"),
    ("open", "opened", "opening"), ("buy", "bought", "buying"),
    ("bring", "brought", "bringing"), ("move", "moved", "moving"),
    ("clean", "cleaned", "cleaning"), ("read", "read", "reading"),
    ("build", "built", "building"), ("sell", "sold", "selling"),
    ("borrow", "borrowed", "borrowing"), ("wrap", "wrapped", "wrapping"),
    ("measure", "measured", "measuring"), ("check", "checked", "checking"),
    ("pack", "packed", "packing"), ("test", "tested", "testing"),
    ("hide", "hid", "hiding"), ("share", "shared", "sharing"),
)
OBJECTS = ("the blue bicycle", "a heavy box", "the kitchen window", "an old map",
           "the garden gate", "a basket of apples", "the broken lamp", "a small boat",
           "the wooden chair", "a pair of boots", "the red umbrella", "a bag of rice",
           "the piano", "a paper kite", "the front door", "some fresh bread",
           "the radio", "a long ladder", "the photo album", "a bottle of milk",
           "the silver key", "a warm blanket", "the garden hose", "a bunch of flowers")
PLACES = ("at the market", "in the garden", "near the station", "by the river",
          "at the office", "in the kitchen", "on the bridge", "behind the school",
          "at the harbour", "in the village", "on the hill", "at the library",
          "in the city centre", "by the lake", "at the museum", "in the park",
          "on the beach", "at the airport", "in the old barn", "next to the bakery")
PAST_TIMES = ("this morning", "last night", "on Monday", "after lunch", "yesterday",
              "last summer", "two weeks ago", "at midnight", "on Friday evening",
              "before dinner", "in the spring", "an hour ago")
FUTURE_TIMES = ("tomorrow", "later today", "next week", "on Monday", "after lunch",
                "before dinner", "in the spring", "tonight", "next year", "at noon")
HABIT_TIMES = ("every Sunday", "every day", "once a month", "most evenings",
               "twice a week", "on weekends")
TIMES = tuple(dict.fromkeys(PAST_TIMES + FUTURE_TIMES + HABIT_TIMES))
ADJECTIVES = ("quiet", "bright", "cold", "busy", "strange", "lovely", "heavy", "simple",
              "noisy", "warm", "tiny", "huge", "gentle", "careful", "funny", "calm")
NOUNS = ("idea", "plan", "road", "song", "story", "morning", "question", "answer",
         "trip", "meeting", "dinner", "garden", "winter", "project", "machine", "game")
FEELINGS = ("happy", "tired", "surprised", "nervous", "proud", "curious", "excited",
            "confused", "relieved", "hungry", "worried", "glad")
REASONS = ("because it was raining", "since the shop was closed",
           "because nobody else could", "as the train was late",
           "because the light was perfect", "since we had some spare time",
           "because it felt right", "as the weather was fine")
EXCLAMATIONS = ("Wow", "Oh no", "Look at that", "Amazing", "Well done", "Goodness",
                "What a day", "No way", "Oh dear", "Fantastic", "Hey", "Right")
OPENERS = ("Well", "So", "Honestly", "Actually", "Anyway", "You know", "Of course",
           "By the way", "To be fair", "Luckily", "Sadly", "Meanwhile")
Q_WORDS = ("Where", "When", "Why", "How")
DURATIONS = ("minutes", "hours", "days", "weeks")
UNITS = ("euros", "kilometres", "people", "pages", "metres", "cups of tea", "tickets",
         "birds", "steps", "boxes")
SMALL = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine",
         "ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen",
         "seventeen", "eighteen", "nineteen")
TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty",
        "ninety")


def number_words(n: int) -> str:
  """Spell 0 <= n < 10000 in English words."""
  n = int(n)
  if n < 20:
    return SMALL[n]
  if n < 100:
    t, u = divmod(n, 10)
    return TENS[t] + ("" if u == 0 else "-" + SMALL[u])
  if n < 1000:
    h, r = divmod(n, 100)
    return SMALL[h] + " hundred" + ("" if r == 0 else " and " + number_words(r))
  th, r = divmod(n, 1000)
  rest = "" if r == 0 else (" and " if r < 100 else " ") + number_words(r)
  return number_words(th) + " thousand" + rest


def _pick(rng, seq):
  return seq[int(rng.integers(len(seq)))]


def _subject(rng):
  u = rng.random()
  if u < 0.35:
    return _pick(rng, NAMES), False
  if u < 0.7:
    return _pick(rng, PEOPLE), False
  p = _pick(rng, PRONOUNS)
  return p, True


def _cap(s: str) -> str:
  return s[:1].upper() + s[1:]


def _lower_first(s: str) -> str:
  """Lower-case the first letter for use mid-sentence, unless it starts a name or "I"."""
  first = s.split(" ", 1)[0]
  if first in NAMES or first == "I":
    return s
  return s[:1].lower() + s[1:]


# --- templates ----------------------------------------------------------------------
def _statement(rng):
  subj, plural = _subject(rng)
  base, past, ing = _pick(rng, VERBS)
  obj = _pick(rng, OBJECTS)
  form = rng.random()
  if form < 0.45:
    s = f"{subj} {past} {obj} {_pick(rng, PLACES)} {_pick(rng, PAST_TIMES)}"
  elif form < 0.7:
    aux = "are" if plural and subj != "I" else ("am" if subj == "I" else "is")
    s = f"{subj} {aux} {ing} {obj} {_pick(rng, PLACES)}"
  elif form < 0.85:
    s = f"{subj} will {base} {obj} {_pick(rng, FUTURE_TIMES)}"
  else:
    s = f"{subj} {past} {obj} {_pick(rng, REASONS)}"
  if rng.random() < 0.2:
    s = f"{_pick(rng, OPENERS)}, {_lower_first(s)}"
  return _cap(s) + "."


def _question(rng):
  subj, plural = _subject(rng)
  base, _, _ = _pick(rng, VERBS)
  obj = _pick(rng, OBJECTS)
  form = rng.random()
  if form < 0.4:
    aux = "do" if plural else "does"
    s = f"{_pick(rng, Q_WORDS)} {aux} {subj} {base} {obj}"
  elif form < 0.7:
    s = f"Did {subj} {base} {obj} {_pick(rng, PAST_TIMES)}"
  elif form < 0.85:
    s = f"Have you seen {obj} {_pick(rng, PLACES)}"
  else:
    s = f"Is the {_pick(rng, NOUNS)} really that {_pick(rng, ADJECTIVES)}"
  return _cap(s) + "?"


def _exclamation(rng):
  form = rng.random()
  if form < 0.5:
    s = f"{_pick(rng, EXCLAMATIONS)}, what a {_pick(rng, ADJECTIVES)} {_pick(rng, NOUNS)}"
  elif form < 0.75:
    s = f"{_pick(rng, EXCLAMATIONS)}! I am so {_pick(rng, FEELINGS)}"
  else:
    subj, _ = _subject(rng)
    s = f"{subj} really did it {_pick(rng, PAST_TIMES)}"
  return _cap(s) + "!"


def _numbers(rng):
  n = int(rng.choice([rng.integers(2, 20), rng.integers(20, 100), rng.integers(100, 2500)]))
  unit = _pick(rng, UNITS)
  base, _, _ = _pick(rng, VERBS)
  obj = _pick(rng, OBJECTS)
  form = rng.random()
  if form < 0.4:
    s = f"It took about {number_words(min(n, 99))} {_pick(rng, DURATIONS)} to {base} {obj}"
  elif form < 0.7:
    subj, _ = _subject(rng)
    s = f"{subj} counted {number_words(n)} {unit} {_pick(rng, PLACES)}"
  else:
    year = int(rng.integers(1950, 2031))
    s = f"That was back in {_year_words(year)}, {_pick(rng, PLACES)}"
  return _cap(s) + "."


def _year_words(y: int) -> str:
  hi, lo = divmod(y, 100)
  if y >= 2000 and y < 2010:
    return number_words(y)
  if lo == 0:
    return number_words(hi) + " hundred"
  return number_words(hi) + " " + (number_words(lo) if lo >= 10 else "oh " + number_words(lo))


def _feeling(rng):
  subj, _ = _subject(rng)
  s = f"{subj} felt {_pick(rng, FEELINGS)} after the {_pick(rng, ADJECTIVES)} {_pick(rng, NOUNS)}"
  if rng.random() < 0.4:
    s += f" {_pick(rng, PAST_TIMES)}"
  return _cap(s) + "."


def _compound(rng):
  a = _statement(rng)[:-1]
  b = _feeling(rng)
  return f"{a}, and {_lower_first(b)}"


_TEMPLATES = ((_statement, 0.38), (_question, 0.18), (_exclamation, 0.1), (_numbers, 0.1),
              (_feeling, 0.14), (_compound, 0.1))
_T_FUNCS = [t for t, _ in _TEMPLATES]
_T_P = np.array([p for _, p in _TEMPLATES]) / sum(p for _, p in _TEMPLATES)


def make_sentence(rng: np.random.Generator) -> str:
  return _T_FUNCS[int(rng.choice(len(_T_FUNCS), p=_T_P))](rng)


def make_script(rng: np.random.Generator, seconds: float, words_per_second: float = 2.6) -> str:
  """Text for roughly ``seconds`` of speech at ``words_per_second`` (at least one sentence)."""
  target = max(1, int(round(seconds * words_per_second)))
  out, n = [], 0
  while n < target:
    s = make_sentence(rng)
    out.append(s)
    n += len(s.split())
  return " ".join(out)
