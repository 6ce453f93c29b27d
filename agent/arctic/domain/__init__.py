"""Pure rules (no I/O) shared by the API, the store, the reconciler and the data plane."""
