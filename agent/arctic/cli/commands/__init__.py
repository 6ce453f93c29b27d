"""One module per command group; each exposes ``command`` for the root group to register."""
