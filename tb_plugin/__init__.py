"""The TensorBoard "Spectrum" plugin of tf-sharpness."""
