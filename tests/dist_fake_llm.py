"""Test-only: imported through an evaluation config's ``custom_imports`` by processes started by
tools/dist_test.sh (tests/test_distributed.py), so that the random tiny LLM answers with ``[SEG]``
and the masks path runs. The stand-in is test_eval_e2e's ``fake_generate``."""
from test_eval_e2e import fake_generate

from projects.salma.models.mllm import InternVLMLLM

InternVLMLLM.generate = fake_generate
