"""``ci/`` mirrors the model zoo's ``ci/unit_tests/``: those files run only from a zoo root (tests/zoo/test_model_zoo_ci.py)."""

collect_ignore = ["ci"]
