"""Curvature of a Keras model's loss: Hessian-vector products (``hvp``) and
the other curvature operators (Gauss-Newton, Fisher, Adam-preconditioned,
per-layer blocks) behind one ``linear_operator`` interface, the loss and
gradient evaluator they are built on, and what is computed from a
``matvec``: Lanczos eigenpairs (``lanczos``), spectral density
(``density``), trace estimates (``trace``) and eigenvector tracking along
training (``tracking``)."""
