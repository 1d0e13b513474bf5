"""Errors raised by tf-sharpness."""


class NonFiniteError(FloatingPointError):
  """A loss, gradient, Hessian-vector product or eigenvalue became NaN or inf.

  ``what`` names the quantity that went non-finite (for example
  ``"loss"`` or ``"Hessian-vector product"``).
  """

  def __init__(self, what: str, detail: str = ""):
    self.what = what
    msg = f"non-finite {what}"
    if detail:
      msg += f": {detail}"
    super().__init__(msg)


class ConfigError(ValueError):
  """A setting (flag or argument) is not allowed; the message names it."""


class UnsupportedModelError(ValueError):
  """A model (a layer of it, named in the message) cannot be measured."""
