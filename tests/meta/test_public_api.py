from __future__ import annotations

import importlib

import pytest

import ragtide

# The plugin SPI: changing any of these lists is a versioned decision.
EXPECTED = {
    "ragtide": ["Settings", "__version__", "create_app"],
    "ragtide.types": [
        "DEFAULT_NAMESPACE",
        "DEFAULT_TENANT",
        "SCOPES",
        "Action",
        "Answer",
        "ApiKeyRecord",
        "ChatTurn",
        "Chunk",
        "Citation",
        "Condition",
        "DocumentInfo",
        "Filter",
        "Grounding",
        "Hit",
        "Intent",
        "NamespaceKey",
        "ParsedDocument",
        "Principal",
        "Prompt",
        "RateDecision",
        "Reply",
        "RetrievalRequest",
        "Scope",
        "Section",
        "SentenceSupport",
        "SessionInfo",
        "TenantRecord",
        "TenantUsage",
        "namespace_key",
        "split_namespace_key",
        "validate_namespace",
        "validate_namespace_key",
        "validate_tenant",
    ],
    "ragtide.access": ["AccessPolicy", "Decision", "RequestContext", "authorize"],
    "ragtide.components": [
        "AnswerCache",
        "BulkLoader",
        "ChatModel",
        "DocumentStore",
        "Embedder",
        "IntentDetector",
        "MemoryStore",
        "RateLimiter",
        "ResultStore",
        "Retriever",
        "TenantStore",
        "Vectors",
    ],
    "ragtide.testing": [
        "AccessPolicyContract",
        "DocumentStoreContract",
        "FakeChatModel",
        "MemoryStoreContract",
        "TenantStoreContract",
        "make_chunks",
    ],
}


@pytest.mark.parametrize("module", sorted(EXPECTED))
def test_exported_members(module: str) -> None:
    mod = importlib.import_module(module)
    assert mod.__all__ == EXPECTED[module]
    assert mod.__all__ == sorted(
        mod.__all__, key=lambda n: (not n.isupper(), n)
    ) or mod.__all__ == sorted(mod.__all__)
    for name in mod.__all__:
        assert getattr(mod, name) is not None


def test_lazy_exports_resolve() -> None:
    assert callable(ragtide.create_app)
    assert ragtide.Settings.__name__ == "Settings"
