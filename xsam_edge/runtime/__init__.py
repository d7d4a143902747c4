"""Run a bundle: numpy host code plus a backend runtime; imports torch only if a backend needs it."""
