"""The shipped answerability weights: ``models/answerability.json``, read once.

The weights were learned by ``python -m ragtide.bench.answers --train`` from seven of the
ten SQuAD v2.0 articles in ``../shared/data/squad-v2-dev-10art`` (the other three are
kept out to report on); ``meta`` in the file says which, and how.
"""

from __future__ import annotations

from ragtide.support import MODEL_FILE, default_scorer
from ragtide.support import shipped_model as default_model

__all__ = ["MODEL_FILE", "default_model", "default_scorer"]
