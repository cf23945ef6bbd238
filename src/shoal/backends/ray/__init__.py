"""The Ray backend: the controller's tasks on an existing Ray cluster (``--backend ray``)."""
