"""Student's t (tf_sharpness.student_t) against its table and a
simulation: the intervals over seeds and Hessian batches rest on it."""

import numpy as np
import pytest

from tf_sharpness import student_t


@pytest.mark.parametrize("dof,p,t", [(1, 0.975, 12.7062), (2, 0.975, 4.3027),
                                     (3, 0.95, 2.3534), (7, 0.975, 2.3646),
                                     (10, 0.995, 3.1693), (30, 0.975, 2.0423),
                                     (120, 0.975, 1.9799)])
def test_quantiles_match_the_table(dof, p, t):
  assert student_t.quantile(p, dof) == pytest.approx(t, abs=1e-4)
  assert student_t.quantile(1 - p, dof) == pytest.approx(-t, abs=1e-4)


def test_probability_matches_a_simulation():
  rng = np.random.default_rng(0)
  for dof in (1, 4, 9):
    draws = np.abs(rng.standard_t(dof, 200_000))
    for t in (0.5, 1.0, 2.5):
      assert student_t.two_sided_probability(t, dof) == pytest.approx(
          (draws <= t).mean(), abs=4e-3)


def test_bad_arguments_are_refused():
  with pytest.raises(ValueError, match="whole number >= 1"):
    student_t.quantile(0.9, 0)
  with pytest.raises(ValueError, match="whole number >= 1"):
    student_t.two_sided_probability(1.0, 2.5)
  with pytest.raises(ValueError, match=r"p must be in \(0, 1\)"):
    student_t.quantile(1.0, 3)
