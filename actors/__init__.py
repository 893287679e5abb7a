"""WIT packages and example actors shipped with drupelet (data, no code)."""
