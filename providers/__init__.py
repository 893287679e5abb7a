"""drupelet's capability providers. Each is found through the ``drupelet.providers``
entry-point group; :mod:`drupelet.providers.base` is the contract they implement."""
