"""engines.json: the supervisor's view of its replicas, for `tidegate engine status`.

Rewritten atomically on every state transition, so a reader in another process always sees a
complete snapshot.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tidegate.engines.marker import read_json, write_json_atomic

STATE_FILE_NAME = "engines.json"


@dataclass(frozen=True)
class ReplicaRecord:
    id: str
    pool: str
    """The local pool (engines.served_model_name for the main one, else an engines.pools name)."""
    model: str
    state: str
    port: int
    pid: int | None
    started_at: float | None
    """Wall-clock time the current process was started."""
    ready_at: float | None
    """Wall-clock time the current process became ready; None while it is not."""
    load_seconds: float | None
    restarts: int
    log: str
    role: str = "routed"
    """routed: in the routing table; standby: a warm standby, loaded but not routed to."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ReplicaRecord:
        def number(key: str) -> float | None:
            value = data.get(key)
            return float(value) if isinstance(value, int | float) else None

        pid = data.get("pid")
        model = str(data.get("model", ""))
        return cls(
            id=str(data.get("id", "?")),
            pool=str(data.get("pool") or model),  # files from before pools: the main pool
            model=model,
            state=str(data.get("state", "unknown")),
            port=int(data.get("port") or 0),
            pid=pid if isinstance(pid, int) else None,
            started_at=number("started_at"),
            ready_at=number("ready_at"),
            load_seconds=number("load_seconds"),
            restarts=int(data.get("restarts") or 0),
            log=str(data.get("log", "")),
            role=str(data.get("role") or "routed"),
        )


@dataclass(frozen=True)
class PoolRecord:
    """One local pool's replica counts as the supervisor last saw them."""

    name: str
    autoscaling: bool
    desired_routed: int
    """Routed replicas wanted (the fixed count without autoscaling)."""
    desired_standby: int
    min_replicas: int
    max_replicas: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PoolRecord:
        def count(key: str) -> int:
            value = data.get(key)
            return value if isinstance(value, int) else 0

        return cls(
            name=str(data.get("name", "?")),
            autoscaling=bool(data.get("autoscaling")),
            desired_routed=count("desired_routed"),
            desired_standby=count("desired_standby"),
            min_replicas=count("min_replicas"),
            max_replicas=count("max_replicas"),
        )


@dataclass(frozen=True)
class EngineSnapshot:
    supervisor_pid: int
    updated_at: float
    replicas: tuple[ReplicaRecord, ...]
    pools: tuple[PoolRecord, ...] = ()


def write_state(path: Path, snapshot: EngineSnapshot) -> None:
    write_json_atomic(
        path,
        {
            "supervisor_pid": snapshot.supervisor_pid,
            "updated_at": snapshot.updated_at,
            "replicas": [asdict(r) for r in snapshot.replicas],
            "pools": [asdict(p) for p in snapshot.pools],
        },
    )


def read_state(path: Path) -> EngineSnapshot | None:
    data = read_json(path)
    if data is None:
        return None
    return EngineSnapshot(
        supervisor_pid=int(data.get("supervisor_pid", 0)),
        updated_at=float(data.get("updated_at", 0.0)),
        replicas=tuple(ReplicaRecord.from_json(r) for r in data.get("replicas", [])),
        pools=tuple(PoolRecord.from_json(p) for p in data.get("pools", [])),
    )
