"""Shared fixtures.  Two logical CPU devices are configured before TensorFlow
runs anything, so tf.distribute tests can compare against one device."""

import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import tensorflow as tf  # noqa: E402

_cpus = tf.config.list_physical_devices("CPU")
tf.config.set_logical_device_configuration(
    _cpus[0], [tf.config.LogicalDeviceConfiguration()] * 2)

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED_CIFAR = os.path.join(os.path.dirname(REPO), "shared", "data",
                            "cifar10-jpeg.tar.gz")


def run_cli(*args: str, timeout: int = 300) -> subprocess.CompletedProcess:
  """``python -m tf_sharpness.cli *args`` (a subcommand and its flags) in a
  fresh Python, from the repository, TensorFlow's logs off: the one way
  tests start the command line (the scripts/ wrappers run the same
  modules; test_cli checks that they are thin)."""
  return subprocess.run([sys.executable, "-m", "tf_sharpness.cli", *args],
                        capture_output=True, text=True, timeout=timeout, cwd=REPO,
                        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3"))


@pytest.fixture(scope="session")
def mini_raw():
  from tf_sharpness import data
  return data.load("cifar10_mini")


@pytest.fixture(scope="session")
def tiny_cifar(mini_raw):
  """64 real CIFAR-10 training images, 4x4 average-pooled to 8x8, standardized."""
  x = mini_raw.train_x[::78][:64].astype(np.float64) / 255.0
  y = mini_raw.train_y[::78][:64]
  x = x.reshape(64, 8, 4, 8, 4, 3).mean(axis=(2, 4))
  x = (x - x.mean(axis=(0, 1, 2))) / x.std(axis=(0, 1, 2))
  return x, y.astype(np.int32)


@pytest.fixture(scope="session")
def shared_cifar_path():
  if not os.path.exists(SHARED_CIFAR):
    pytest.skip(f"the shared CIFAR-10 archive is not at {SHARED_CIFAR}")
  return SHARED_CIFAR


@pytest.fixture(autouse=True)
def _restore_keras_dtypes():
  """Tests that build float64 models must not leak float64 into later ones
  (Keras caches its global dtype policy from floatx on first use)."""
  import keras
  yield
  keras.config.set_floatx("float32")
  keras.config.set_dtype_policy("float32")


# Slow tests (``pytest -m "not slow"`` leaves them out; CI runs everything):
# whole modules that train, start processes or a browser, and any other test
# whose body starts a process (a script, a subcommand, another backend).
SLOW_MODULES = {"test_backends", "test_browser", "test_multi_worker", "test_resume",
                "test_second_order_audit"}
_STARTS_A_PROCESS = ("subprocess", "run_cli(", "Popen", "sys.executable")
# Tests that run an experiment driver or train several models in-process
# (each 15-90 s on 2 cores).
SLOW_TESTS = {"test_trajectory_report_windows_crossings_and_comparison",
              "test_phase_diagram_driver_refines_resumes_and_shards",
              "test_only_the_runs_asked_for_and_clear_errors",
              "test_bad_input_names_the_flag",
              "test_trajectory_report_names_the_flag_on_bad_input",
              "test_help_lists_every_subcommand_and_unknown_ones_are_refused",
              "test_runs_summarize_reuse_and_round_trip",
              "test_every_probe_on_every_model",
              # 6-21 s each: their fast stand-ins are the closed-form and
              # one-case tests of the same modules
              "test_lambda_max_interval_covers_the_full_data_value",
              "test_methods_agree_and_batching_does_not_change_the_operator",
              "test_nsgd_thresholds_are_those_of_its_two_step_sizes",
              "test_readme_own_model_example_runs",
              "test_mirrored_strategy_equals_single_device",
              "test_mirrored_strategy_matches_one_device",
              "test_loop_records_the_interval_and_the_directional_curvature",
              "test_trajectory_report_compares_with_its_run_in_a_sweep_json",
              "test_stability_lines_follow_the_optimizer",
              "test_block_spectra_and_masses_match_the_dense_hessian",
              "test_datasets_and_generators_as_hessian_data"}
# Parametrized suites: the fast subset keeps these cases (one per kind of
# difficulty), CI runs every case.
FAST_CASES = {
    "test_every_family_matches_the_exact_hessian_through_the_callback":
        {"layernorm", "batchnorm_batch", "multi_output", "embedding"},
    "test_matvec_equals_exact_hessian": {"forward_over_reverse-mlp", "forward_over_reverse-bn"},
    "test_every_loss_form_gives_the_mean_loss_hessian": {"7-mean", "40-lambda_per_example"},
    "test_heavy_ball_and_nesterov_thresholds": {"0.9-True"},
    "test_top_and_bottom_eigenvalues_match_eigh": {"mlp"},
}


def pytest_collection_modifyitems(config, items):
  import inspect
  for item in items:
    module = item.module.__name__.rsplit(".", 1)[-1]
    try:
      source = inspect.getsource(item.function)
    except (OSError, TypeError):
      source = ""
    case = item.callspec.id if hasattr(item, "callspec") else None
    kept = FAST_CASES.get(item.originalname)
    if (module in SLOW_MODULES or item.originalname in SLOW_TESTS
        or (kept is not None and case not in kept)
        or any(k in source for k in _STARTS_A_PROCESS)):
      item.add_marker(pytest.mark.slow)
