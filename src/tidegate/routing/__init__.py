"""Pools of replicas per public model name and the choice of a replica for each request."""
