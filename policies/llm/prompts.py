"""What an LLM recommender reads and answers: the LLaRA / S-DPO candidate-selection prompt.

The prompt lists the user's recent titles (oldest first) and the candidate titles; the answer is
one candidate's title. Responses are scored and trained as ``" " + title`` followed by the end-of-text
token (the way trl appends ``eos`` to completions), so the end token marks where a title stops and
"Alien" is not a prefix-win over "Aliens".

Titles are shown as readers write them: MovieLens's "Usual Suspects, The (1995)" becomes "The Usual
Suspects (1995)" (LLaRA's ``get_mv_title`` does the same, minus the year, which we keep because it
tells remakes apart). Answers are matched back to items by ``simenv.audit.hallucination.TitleIndex``
over these display titles.
"""
from __future__ import annotations

import re
from typing import Sequence

import numpy as np

_ARTICLE = re.compile(r"^(?P<body>.*), (?P<article>The|A|An|Les|La|Le|L'|Il|Das|Der|Die|El)(?P<tail>( \(\d{4}\))?( \[id \d+\])?)$")

INSTRUCTION = "This user has watched {history} in the previous."
QUESTION = ("Please predict the next movie this user will watch. Choose the answer from the following "
            "{n} movie titles: {candidates}.")
ANSWER_CUE = "Answer:"
SEPARATOR = "; "  # titles contain commas ("Shawshank Redemption, The"), so lists use semicolons


def display_title(title: str) -> str:
    """A catalog title as a reader writes it: a trailing article moved to the front."""
    m = _ARTICLE.match(str(title))
    if m is None:
        return str(title)
    sep = "" if m["article"].endswith("'") else " "
    return f"{m['article']}{sep}{m['body']}{m['tail']}"


def recommendation_prompt(history: Sequence[str], candidates: Sequence[str]) -> str:
    """The candidate-selection prompt for one user: display titles of the history and candidates."""
    seen = SEPARATOR.join(history) if len(history) else "nothing yet"
    return (INSTRUCTION.format(history=seen) + " "
            + QUESTION.format(n=len(candidates), candidates=SEPARATOR.join(candidates)) + "\n" + ANSWER_CUE)


def prompts_from_ids(history: np.ndarray, candidates: np.ndarray, display: Sequence[str]) -> list[str]:
    """The prompt of each row from item ids: ``history`` (n, H) oldest first, -1 = empty (skipped);
    ``candidates`` (n, C); ``display`` the display title of every item id."""
    return [recommendation_prompt([display[j] for j in past if j >= 0], [display[j] for j in cands])
            for past, cands in zip(np.asarray(history), np.asarray(candidates))]


def response(title: str) -> str:
    """The answer text for a display title (the end-of-text token is appended at tokenisation)."""
    return " " + title
