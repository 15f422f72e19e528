"""The gates of this gateway, built once from ``safety``. Built even with no policy defined:
a tenant naming a policy this gateway lacks must still be refused, not served unchecked."""

from __future__ import annotations

from collections.abc import Mapping

import aiohttp
from prometheus_client import CollectorRegistry

from tidegate.config import ClassifierCheck, Config
from tidegate.routing.replicas import RoutingTable
from tidegate.safety.checks import PiiDetectors
from tidegate.safety.classifier import Classifier, build_classifier
from tidegate.safety.gates import SafetyGates
from tidegate.safety.metrics import SafetyMetrics
from tidegate.upstream.exchange import Provider


def build_safety(
    config: Config,
    *,
    registry: CollectorRegistry,
    routing: RoutingTable,
    providers: Mapping[str, Provider],
    session: aiohttp.ClientSession,
    pii: PiiDetectors,
) -> SafetyGates:
    def classifier(check: ClassifierCheck) -> Classifier:
        return build_classifier(check, routing=routing, providers=providers, session=session)

    return SafetyGates(
        config.safety, metrics=SafetyMetrics(registry), pii=pii, classifier=classifier
    )
