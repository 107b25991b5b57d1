"""Blueprints: thin transports that validate, call the inference layer, and serialise."""
