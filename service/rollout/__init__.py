"""Which versions serve and how a version earns more traffic: the rollout state and its follower,
shadow traffic, feedback and quality, per-arm evidence, guardrails, plans and their controller.
It may import store, observability and the ground files; not admission, not core."""
