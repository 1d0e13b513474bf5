"""tf-sharpness: see and steer the curvature of a Keras model's loss.

Public API:

* Curvature operators: ``HessianOperator``, ``GaussNewtonOperator``,
  ``FisherOperator``, ``PreconditionedOperator`` (with
  ``adam_preconditioner``), ``MatrixOperator``; ``LossEvaluator`` (the
  mean loss and its gradient, which they build on); ``CompiledLoss`` (a
  model's whole compiled training loss as their objective); ``blocks``
  (per-layer diagonal blocks and eigenvector mass).
* Spectral methods: ``lanczos``, ``top_eigenpairs``, ``spectral_density``,
  ``hessian_trace``, ``hutchpp_trace`` and their results ``EigenResult``,
  ``LanczosResult``, ``DensityResult``, ``TraceResult``; ``LogProgress``
  for their ``progress`` argument.
* Along training: ``SpectrumCallback`` for ``model.fit`` and the probes it
  runs (``tf_sharpness.probes``); ``stability`` (thresholds per optimizer).
* Vectors: ``flatten``, ``unflatten``.
* Optimizers: ``NSGD`` (and ``NSGDRefresh``); ``SAM`` (SAM/ASAM for
  ``model.fit``, a model wrapper).
* Sharpness measures beyond lambda_max: ``sharpness`` (worst- and
  average-case, adaptive, m-sharpness, Keskar, Fisher-Rao, relative
  flatness, tr(H^2), the Hessian diagonal); ``directional`` (curvature
  along a direction, batch and critical sharpness, the gradient of the
  sharpness); ``lambda_max_interval`` (an interval for the full-data
  lambda_max from a sample, ``tf_sharpness.subsample``).
* Errors: ``NonFiniteError``, ``ConfigError``, ``UnsupportedModelError``.
"""

from tf_sharpness import directional, probes, sharpness, stability
from tf_sharpness.callbacks import NSGDRefresh, SpectrumCallback
from tf_sharpness.curvature import blocks
from tf_sharpness.curvature.compiled_loss import CompiledLoss
from tf_sharpness.curvature.density import DensityResult, spectral_density
from tf_sharpness.curvature.evaluator import LossEvaluator
from tf_sharpness.curvature.fisher import FisherOperator
from tf_sharpness.curvature.gauss_newton import GaussNewtonOperator
from tf_sharpness.curvature.hvp import HessianOperator
from tf_sharpness.curvature.lanczos import EigenResult, LanczosResult, lanczos, top_eigenpairs
from tf_sharpness.curvature.linear_operator import MatrixOperator
from tf_sharpness.curvature.preconditioned import PreconditionedOperator, adam_preconditioner
from tf_sharpness.curvature.trace import TraceResult, hessian_trace, hutchpp_trace
from tf_sharpness.curvature.vectors import flatten, unflatten
from tf_sharpness.errors import ConfigError, NonFiniteError, UnsupportedModelError
from tf_sharpness.nsgd import NSGD
from tf_sharpness.progress import LogProgress
from tf_sharpness.subsample import LambdaInterval, lambda_max_interval
from tf_sharpness.sam import SAM

__version__ = "0.2.0"

__all__ = [
    "CompiledLoss", "ConfigError", "DensityResult", "EigenResult", "FisherOperator",
    "GaussNewtonOperator", "HessianOperator", "LambdaInterval", "LanczosResult", "LogProgress",
    "LossEvaluator", "MatrixOperator", "NSGD", "NSGDRefresh", "NonFiniteError",
    "PreconditionedOperator", "SAM", "SpectrumCallback", "TraceResult", "UnsupportedModelError",
    "adam_preconditioner", "blocks", "directional",
    "flatten", "hessian_trace", "hutchpp_trace", "lambda_max_interval", "lanczos", "probes",
    "sharpness",
    "spectral_density", "stability", "top_eigenpairs", "unflatten",
]
