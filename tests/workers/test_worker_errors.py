"""A worker that dies while loading the workload: the user's error comes back as one line, a bug
keeps its traceback."""

from __future__ import annotations

from nasforge.core.errors import NasforgeError
from nasforge.supernets.trainer import CheckpointError
from nasforge.workers.pool import _user_error_in

# what Ray's ActorDiedError says when the actor's creation task raised (it carries no exception object)
DIED = """The actor died because of an error raised in its creation task, ray::EvalWorker.__init__() (pid=27711)
  File "/work/main/nasforge/workers/supernet_workload.py", line 201, in setup
    self.supernet = load_trained_supernet(
  File "/work/main/nasforge/supernets/trainer.py", line 491, in _load_weights
    raise CheckpointError(
nasforge.supernets.trainer.CheckpointError: supernet.checkpoint: /x.safetensors does not match this supernet
"""


def test_a_nasforge_error_is_rebuilt_with_its_class_and_message() -> None:
    err = _user_error_in(DIED)
    assert isinstance(err, CheckpointError) and isinstance(err, NasforgeError)
    assert str(err) == "supernet.checkpoint: /x.safetensors does not match this supernet"


def test_anything_else_is_left_to_keep_its_traceback() -> None:
    assert _user_error_in(DIED.replace("nasforge.supernets.trainer.CheckpointError", "RuntimeError")) is None
    assert _user_error_in("nasforge.core.types.Arch: not an exception") is None
    assert _user_error_in("nasforge.nowhere.Missing: x") is None
    assert _user_error_in("") is None
