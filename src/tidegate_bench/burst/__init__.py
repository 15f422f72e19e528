"""The burst scenario of ``tidegate bench run --scenario burst``: a baseline, a burst of N times
the load for T seconds and a cool-down, with the gateway's replicas scraped meanwhile."""
