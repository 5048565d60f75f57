"""One object's migration: learn its state, decide, run one strategy (falling back in order), verify, outcome."""
