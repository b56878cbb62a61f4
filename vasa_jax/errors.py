"""The one error type the command line reports as bad input.

An `InputError` is something the user can fix (a path, a file that is not what it should be,
an option out of range): `vasa-jax` prints its first line and exits with status 2. Any other
exception is a bug and keeps its traceback.
"""


class InputError(ValueError):
  """Bad input from the user (a path, a spec, an option): reported in one line, exit 2."""
