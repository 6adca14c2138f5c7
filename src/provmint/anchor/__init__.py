"""Anchoring batches on an EVM chain (``provmint anchor``), and checking anchors there.

Anchoring is split by role, so each concern has one home:

* :mod:`provmint.anchoring` (core): the ``provmint-anchor/1`` format: the anchor tree,
  its digest, the calldata payload, a proof's anchor section. Pure, pinned by vectors.
* :mod:`provmint.chain` (edge): the node connection and the chain key; every web3 error
  is mapped into the provmint error tree there, once.
* :mod:`provmint.store.anchors` (edge): persistence: the anchor states and the moves
  allowed between them (checked on every write), the rows, and their journal files.
* this package (verbs):

  - :mod:`~provmint.anchor.fees`: the fee and spending caps, the sender's funds;
  - :mod:`~provmint.anchor.lifecycle`: moves one anchor through its states (sign,
    broadcast, receipt, confirmations, replacement, reorg);
  - :mod:`~provmint.anchor.run`: ``provmint anchor``: plan one anchor for the pending
    batches and drive it;
  - :mod:`~provmint.anchor.schedule`: ``provmint anchor --every``: runs on a schedule,
    one line each, until stopped;
  - :mod:`~provmint.anchor.status`: ``provmint anchor status``;
  - :mod:`~provmint.anchor.registry`: the AnchorRegistry and ProvmintVerifier contracts
    and their deployment;
  - :mod:`~provmint.anchor.check`: a proof's anchor checked on chain (``provmint verify``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

# Names are loaded on first use: ``provmint verify --rpc-url`` needs only ``check``, not
# the run, the registry or the store they bring along.
_EXPORTS = {
    "ChainCheck": "provmint.anchor.check",
    "check_anchor_on_chain": "provmint.anchor.check",
    "RegistryDeployment": "provmint.anchor.registry",
    "deploy_registry": "provmint.anchor.registry",
    "deploy_verifier": "provmint.anchor.registry",
    "verifier_artifact": "provmint.anchor.registry",
    "registry_artifact": "provmint.chain",
    "AnchorPlan": "provmint.anchor.run",
    "AnchorRun": "provmint.anchor.run",
    "anchor_batches": "provmint.anchor.run",
    "ScheduledRun": "provmint.anchor.schedule",
    "anchor_every": "provmint.anchor.schedule",
    "parse_every": "provmint.anchor.schedule",
    "StatusReport": "provmint.anchor.status",
    "anchor_status": "provmint.anchor.status",
}

__all__ = [
    "AnchorPlan",
    "AnchorRun",
    "ChainCheck",
    "RegistryDeployment",
    "ScheduledRun",
    "StatusReport",
    "anchor_batches",
    "anchor_every",
    "anchor_status",
    "check_anchor_on_chain",
    "deploy_registry",
    "deploy_verifier",
    "parse_every",
    "registry_artifact",
    "verifier_artifact",
]

if TYPE_CHECKING:
    from provmint.anchor.check import ChainCheck, check_anchor_on_chain
    from provmint.anchor.registry import (
        RegistryDeployment,
        deploy_registry,
        deploy_verifier,
        verifier_artifact,
    )
    from provmint.anchor.run import AnchorPlan, AnchorRun, anchor_batches
    from provmint.anchor.schedule import ScheduledRun, anchor_every, parse_every
    from provmint.anchor.status import StatusReport, anchor_status
    from provmint.chain import registry_artifact


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'provmint.anchor' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return __all__
