"""MovieLens-100K: the streaming pipeline and baselines under one prequential page protocol.

* :mod:`~evaluation.movielens.data`: fetch (at run time, cached outside git), load, and map
  ratings to the pipeline's catalog records and player events.
* :mod:`~evaluation.movielens.protocol`: the prequential page protocol and its metrics
  (pure).
* :mod:`~evaluation.movielens.baselines`: random, most popular, item-kNN, EASE, and the
  River rating-prediction anchor (pure).
* :mod:`~evaluation.movielens.pipeline`: the real pipeline (broker, Redis, worker) as a
  recommender.
* ``python -m evaluation.movielens`` runs everything and writes docs/evaluation.md.
"""
