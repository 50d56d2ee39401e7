"""The homestream distribution's own namespace: settings, the player client and CLI, and the
local stack.

The pipeline's stages keep the top-level packages their users asked for (``topics``,
``features``, ``online_models``, ``streams``, ``serving``); everything else that is installed
lives here, so the distribution claims no generic top-level name such as ``settings`` or
``player``. The benchmarks (``bench/``) and offline evaluation (``evaluation/``) are tools run
from a checkout (``python -m bench.run``, ``python -m evaluation``) and are not installed.
"""
