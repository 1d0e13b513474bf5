"""Measurements along a training trajectory, shared by ``training.train``
and ``callbacks.SpectrumCallback`` (see ``probes.base`` for the design)."""

from tf_sharpness.probes.base import (Context, EigenTracker, Measured, Probe, Record,
                                      Schedule, checkpoint_state, eigenpairs_needed,
                                      run_due)
from tf_sharpness.probes.curvature import (BlockSpectrumProbe, DensityProbe, HessianSubset,
                                           LambdaIntervalProbe, NSGDRefreshProbe,
                                           PreconditionedSpectrumProbe, SmallestEigenvaluesProbe,
                                           SpectrumProbe, TraceProbe)
from tf_sharpness.probes.evaluation import EvaluationProbe
from tf_sharpness.probes.assembly import ProbeSpec, assemble, spec_from_config
from tf_sharpness.probes.directional import DirectionalProbe
from tf_sharpness.probes.sharpness import SharpnessProbe
from tf_sharpness.probes.landscape import (LandscapeData, SliceProbe, StepAnalysisProbe,
                                          SurfaceProbe, WalkProbe)

__all__ = [
    "BlockSpectrumProbe", "Context", "DensityProbe", "DirectionalProbe", "EigenTracker", "EvaluationProbe", "HessianSubset",
    "LambdaIntervalProbe", "LandscapeData", "Measured", "NSGDRefreshProbe", "PreconditionedSpectrumProbe",
    "Probe", "Record", "Schedule", "SharpnessProbe", "SliceProbe", "SmallestEigenvaluesProbe", "SpectrumProbe", "StepAnalysisProbe",
    "SurfaceProbe", "TraceProbe", "WalkProbe", "ProbeSpec", "assemble", "checkpoint_state",
    "eigenpairs_needed", "run_due", "spec_from_config",
]
