"""For people outside the service: the Python client (`toxiserve.client`) and the operator's
command line (`toxiserve.cli`, installed as `toxiserve`). Both speak HTTP only: they import
nothing from `service`, so using them loads neither Flask nor numpy."""
