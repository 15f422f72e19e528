"""Model rollouts: version records, weighted sticky splits, shadow traffic with comparison, and
the staged rollout controller. State lives in the store; every gateway follows it."""
