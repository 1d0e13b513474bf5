"""The machine a benchmark ran on, printed first by every benchmark so that
figures from different machines are never compared by mistake.

    CPU: AMD EPYC (2 logical cores), ISA: AVX2 (no AVX-512); threads: TF intra 2 /
    inter 2; TensorFlow 2.21.0 (oneDNN on, ONEDNN_MAX_CPU_ISA unset); no GPU
"""

from __future__ import annotations

import os
import platform


def cpu_model() -> str:
  try:
    with open("/proc/cpuinfo") as f:
      for line in f:
        if line.startswith("model name"):
          return line.split(":", 1)[1].strip()
  except OSError:
    pass
  return platform.processor() or platform.machine()


def isa_flags() -> list[str]:
  """The vector instruction sets of the CPU (Linux /proc/cpuinfo)."""
  try:
    with open("/proc/cpuinfo") as f:
      flags = next((l.split(":", 1)[1].split() for l in f if l.startswith("flags")), [])
  except OSError:
    return []
  return [name for name in ("avx", "avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16",
                            "amx_tile") if name in flags]


def describe() -> str:
  import tensorflow as tf  # pylint: disable=g-import-not-at-top
  flags = isa_flags()
  isa = "AVX-512" if "avx512f" in flags else "AVX2 (no AVX-512)" if "avx2" in flags \
      else "no AVX2"
  cap = os.environ.get("ONEDNN_MAX_CPU_ISA", "unset")
  onednn = os.environ.get("TF_ENABLE_ONEDNN_OPTS", "1") != "0"
  gpus = tf.config.list_physical_devices("GPU")
  gpu = ", ".join(tf.config.experimental.get_device_details(g).get("device_name", g.name)
                  for g in gpus) if gpus else "no GPU"
  intra = tf.config.threading.get_intra_op_parallelism_threads() or os.cpu_count()
  inter = tf.config.threading.get_inter_op_parallelism_threads() or os.cpu_count()
  return (f"CPU: {cpu_model()} ({os.cpu_count()} logical cores), ISA: {isa} "
          f"[{' '.join(flags)}]; threads: TF intra {intra} / inter {inter}; "
          f"TensorFlow {tf.__version__} (oneDNN {'on' if onednn else 'off'}, "
          f"ONEDNN_MAX_CPU_ISA={cap}); {gpu}")


def print_machine() -> None:
  print("machine:", describe(), flush=True)


if __name__ == "__main__":
  print_machine()


def default_dataset() -> str:
  """What a benchmark trains and measures on by default: the real CIFAR-10
  archive beside the repository (../shared/data), else the embedded
  subset."""
  path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared",
                      "data", "cifar10-jpeg.tar.gz")
  return path if os.path.exists(path) else "cifar10_mini"
