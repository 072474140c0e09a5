"""User-facing errors: one clear line, exit code 2, never a traceback."""


class UserError(Exception):
  """A problem with the user's input (file, flag, weights); the CLI prints it on one line."""

  exit_code = 2

  def __init__(self, message: str):
    super().__init__(" ".join(str(message).split()))
