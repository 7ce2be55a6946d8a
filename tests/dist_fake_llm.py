"""Test-only: imported through an evaluation config's ``custom_imports`` by processes started by
tools/dist_test.sh (tests/test_distributed.py), so that the random tiny LLM answers with ``[SEG]``
and the masks path runs: test_eval_e2e's answers, emitted by the real generation steered with
``projects.salma.testing.forced_answer`` for the whole life of the process."""
from test_eval_e2e import answer_for

from projects.salma.testing import forced_answer

_FORCED = forced_answer(answer_for)  # kept: a collected context manager would restore the real generate
_FORCED.__enter__()
