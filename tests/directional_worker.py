"""DirectionalProbe in model.fit on the Keras backend KERAS_BACKEND names,
on a quadratic (a linear model, half MSE, float64, full batch): the
curvature along the update and the critical sharpness of the step (from
theta_t) both equal g_t^T A g_t / g_t^T g_t, A from the inputs in closed
form.  Exit status 0 when every measurement is within 2% (the bisection's
tolerance is 1%); run by tests/backends/test_backends.py."""
import sys

import numpy as np
import keras
import tf_sharpness as tfs
keras.config.set_floatx("float64")
rng = np.random.default_rng(0)
n, d, k = 40, 4, 2
x = rng.normal(size=(n, d)) * np.array([2.0, 1.0, 0.6, 0.3])
y = rng.normal(size=(n, k))
model = keras.Sequential([keras.Input((d,)), keras.layers.Dense(k)])
model.layers[0].bias.assign(rng.normal(size=k))
def half_mse(yt, p):
  return 0.5 * keras.ops.mean(keras.ops.sum(keras.ops.square(p - yt), axis=-1))
lr = 0.05
model.compile(optimizer=keras.optimizers.SGD(lr), loss=half_mse)
a1 = np.hstack([x, np.ones((n, 1))]); c = a1.T @ a1 / n
thetas = []
class Keep(keras.callbacks.Callback):
  def on_train_batch_begin(self, batch, logs=None):
    w = [np.asarray(v) for v in self.model.get_weights()]
    thetas.append(w)
probe = tfs.probes.DirectionalProbe(tfs.probes.Schedule(every=2))
cb = tfs.SpectrumCallback(None, (x, y), every=0, k=1, probes=[probe], verbose=False)
model.fit(x, y, batch_size=40, epochs=5, shuffle=False, verbose=0, callbacks=[Keep(), cb])
worst = 0.0
for rec in [r for r in cb.records if "directional" in r]:
  kern, bias = thetas[rec["step"]]
  W = np.vstack([kern, bias[None]])  # [(d+1), k]
  G = c @ W - a1.T @ y / n            # gradient per output column
  num = sum(G[:, o] @ c @ G[:, o] for o in range(k)); den = (G * G).sum()
  want = num / den
  got_u, got_c = rec["directional"]["update"], rec["directional"]["critical_update"]
  worst = max(worst, abs(got_u / want - 1), abs(got_c / want - 1))
  print(keras.backend.backend(), rec["step"], round(want, 6), round(got_u, 6), round(got_c, 6))
print("worst relative error", worst)
sys.exit(0 if worst < 2e-2 else 1)
