"""ingest: the HTTP receiver, the provider signature verifiers and the provider fetch clients."""
