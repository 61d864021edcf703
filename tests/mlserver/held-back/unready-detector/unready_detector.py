"""A model whose load never succeeds: MLServer keeps it registered and not ready, so the server is not ready."""

from mlserver import MLModel


class UnreadyDetector(MLModel):
    async def load(self) -> bool:
        return False
