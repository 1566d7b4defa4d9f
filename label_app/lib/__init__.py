"""Infer and train tasks of the MONAI Label app, and where they find the bundle."""
