"""Autoscaling: the scaling policy's decisions, shared by the engine supervisor (which executes
them on local replicas) and the simulator (which replays them against a traffic trace)."""
