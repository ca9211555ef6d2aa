"""Acme's Ragtide plugins: ``acme-boost`` (a retriever) and ``acme-clearance`` (a policy)."""

from ragtide_acme.policy import ClearancePolicy
from ragtide_acme.retriever import AcmeRetriever

__all__ = ["AcmeRetriever", "ClearancePolicy"]
