"""Rules for further ops met in the model zoo (added by the coverage sweep)."""
