"""The ``hpcplat`` command line: thin commands over the service layer, loaded lazily."""
