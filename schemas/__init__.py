"""schemas: the contracts — event models, the status model, the transition table and the pure join."""
