"""The shipped answerability weights: ``models/answerability.json``, read once.

The weights were learned by ``python -m ragtide.bench.answers --train`` from seven of the
ten SQuAD v2.0 articles in ``../shared/data/squad-v2-dev-10art`` (the other three are
kept out to report on); ``meta`` in the file says which, and how.
"""

from __future__ import annotations

import json
from functools import lru_cache
from importlib import resources

from ragtide.support import SupportModel, SupportScorer

__all__ = ["MODEL_FILE", "default_model", "default_scorer"]

MODEL_FILE = "answerability.json"


@lru_cache(maxsize=1)
def default_model() -> SupportModel:
    text = resources.files("ragtide.builtin.models").joinpath(MODEL_FILE).read_text()
    return SupportModel.from_dict(json.loads(text))


def default_scorer() -> SupportScorer:
    return SupportScorer(default_model())
