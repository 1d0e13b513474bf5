"""``python -m tf_sharpness.cli`` is ``tf-sharpness``."""

from tf_sharpness.cli import main

main()
