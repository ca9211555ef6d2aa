"""Test helpers shipped for plugin authors: fakes and contract suites.

A plugin proves it honours a role by inheriting the role's contract::

    class TestMyStore(DocumentStoreContract):
        @pytest.fixture
        async def store(self):
            ...  # yield a started store on an empty database
"""

from ragtide.testing.contracts import (
    DocumentStoreContract,
    MemoryStoreContract,
    TenantStoreContract,
)
from ragtide.testing.fakes import FakeChatModel, make_chunks
from ragtide.testing.policies import AccessPolicyContract

__all__ = [
    "AccessPolicyContract",
    "DocumentStoreContract",
    "FakeChatModel",
    "MemoryStoreContract",
    "TenantStoreContract",
    "make_chunks",
]
