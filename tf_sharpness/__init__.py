"""tf-sharpness: see and steer the curvature of a Keras model's loss.

Public API:

* Curvature operators: ``HessianOperator``, ``GaussNewtonOperator``,
  ``FisherOperator``, ``PreconditionedOperator`` (with
  ``adam_preconditioner``), ``MatrixOperator``.
* Spectral methods: ``lanczos``, ``top_eigenpairs``, ``spectral_density``,
  ``hessian_trace`` and their results ``EigenResult``, ``LanczosResult``,
  ``DensityResult``, ``TraceResult``.
* Vectors: ``flatten``, ``unflatten``.
* Optimizer: ``NSGD`` (and ``callbacks.NSGDRefresh``).
* Errors: ``NonFiniteError``.
"""

from tf_sharpness.density import DensityResult, spectral_density
from tf_sharpness.errors import NonFiniteError
from tf_sharpness.fisher import FisherOperator
from tf_sharpness.gauss_newton import GaussNewtonOperator
from tf_sharpness.hvp import HessianOperator
from tf_sharpness.lanczos import EigenResult, LanczosResult, lanczos, top_eigenpairs
from tf_sharpness.linear_operator import MatrixOperator
from tf_sharpness.nsgd import NSGD
from tf_sharpness.preconditioned import PreconditionedOperator, adam_preconditioner
from tf_sharpness.trace import TraceResult, hessian_trace, hutchpp_trace
from tf_sharpness.vectors import flatten, unflatten

__version__ = "0.1.0"

__all__ = [
    "DensityResult", "EigenResult", "FisherOperator", "GaussNewtonOperator",
    "HessianOperator", "LanczosResult", "PreconditionedOperator",
    "adam_preconditioner",
    "MatrixOperator", "NSGD", "NonFiniteError", "TraceResult", "flatten",
    "hessian_trace", "hutchpp_trace", "lanczos", "spectral_density", "top_eigenpairs",
    "unflatten",
]
