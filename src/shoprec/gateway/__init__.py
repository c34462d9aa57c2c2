"""Online gateway: FastAPI over the Feast online store and Triton's gRPC API.

``create_app`` builds the app; routes are in :mod:`.routes`, upstream interfaces and bounded
calls in :mod:`.deps`, the Triton client in :mod:`.triton`, metrics in :mod:`.metrics`.
"""

from shoprec.gateway.app import create_app
from shoprec.gateway.settings import Settings

__all__ = ["Settings", "create_app"]
