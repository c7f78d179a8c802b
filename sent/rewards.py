"""The reward function verl loads by path (``custom_reward_function.path``, `sent.engines.verl`):
`compute_score`, and the grading API under its old names. The code is in `sent.grading`."""

from sent.grading import *  # noqa: F403  (the package's public names, listed once in its __all__)
from sent.grading import __all__  # noqa: F401
