"""Artwork personalization, evaluated: the Open Bandit Dataset check, a simulated population
on the real pipeline, and offline (replay / IPS / SNIPS / DR) evaluation of candidate policies
on the pipeline's own impression logs. ``python -m evaluation.artwork [--quick]`` runs all of
it and writes ``docs/artwork.md``.
"""
