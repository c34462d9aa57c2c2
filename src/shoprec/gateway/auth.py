"""Who may call what: API keys in ``X-API-Key``, as FastAPI dependencies, plus rate limits.

* :data:`ReadAccess`: the read routes, ``/docs``, ``/openapi.json`` and ``/metrics``. Without
  a key the request is anonymous (allowed unless ``Settings.require_read_key``); any valid key
  (read or write) is accepted. Spends one unit of the caller's ``reads`` budget.
* :data:`CatalogWriteAccess`: customer and article writes; needs a ``write`` key. Spends one
  unit of ``writes``.
* :data:`EventWriteAccess`: ``POST /v1/events``; needs a ``write`` key. The route spends the
  ``events`` budget by the number of events in the batch.

Stable ``detail`` strings:

* 401 :data:`KEY_REQUIRED` (no key where one is needed), :data:`INVALID_KEY` (a key that
  matches none), both with ``WWW-Authenticate: APIKey header="X-API-Key"``;
* 403 :data:`WRITE_KEY_REQUIRED` (a read key on a write route);
* 429 :data:`~shoprec.gateway.ratelimit.RATE_LIMITED` with ``Retry-After``.

Keys are never logged; see :mod:`shoprec.gateway.keys` for storage and comparison.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Final, cast

from fastapi import Depends, HTTPException, Request, Security, status
from fastapi.security import APIKeyHeader

from shoprec.gateway.keys import HEADER, ApiKey, KeyRing, Role
from shoprec.gateway.ratelimit import Budget, RateLimits
from shoprec.gateway.settings import Settings

KEY_REQUIRED: Final = "API key required"
INVALID_KEY: Final = "invalid API key"
WRITE_KEY_REQUIRED: Final = "write key required"
_CHALLENGE: Final = {"WWW-Authenticate": f'APIKey header="{HEADER}"'}

api_key_header = APIKeyHeader(
    name=HEADER,
    auto_error=False,
    description="A shoprec API key: a write key for the write API; a read or write key for "
    "reads when the gateway requires one.",
)


@dataclass(frozen=True)
class Caller:
    """Who sent a request: the matched key (None = anonymous) and the client address."""

    key: ApiKey | None
    address: str

    @property
    def identity(self) -> str:
        """What rate limits count against: ``key:<name>`` or ``client:<address>``."""
        return f"key:{self.key.name}" if self.key else f"client:{self.address}"


class AccessControl:
    """The keys and rate limits of one app (built at startup from the settings).

    Raises:
        KeysFileError: the keys file is missing or invalid.
        ValueError: two keys share a name.
    """

    def __init__(self, settings: Settings, limits: RateLimits | None = None) -> None:
        self.keys = KeyRing(settings.all_api_keys())
        self.require_read_key = settings.require_read_key
        self.limits = limits or RateLimits(settings)

    def caller(self, request: Request, presented: str | None, *, required: bool) -> Caller:
        """The request's :class:`Caller`.

        Raises:
            HTTPException: 401 when a key is required and absent, or presented and unknown.
        """
        address = request.client.host if request.client else "unknown"
        if presented is None:
            if required:
                raise HTTPException(status.HTTP_401_UNAUTHORIZED, KEY_REQUIRED, _CHALLENGE)
            return Caller(None, address)
        key = self.keys.identify(presented)
        if key is None:
            raise HTTPException(status.HTTP_401_UNAUTHORIZED, INVALID_KEY, _CHALLENGE)
        return Caller(key, address)


def get_access(request: Request) -> AccessControl:
    """The app's :class:`AccessControl`."""
    return cast(AccessControl, request.app.state.access)


PresentedKey = Annotated[str | None, Security(api_key_header)]


async def read_access(request: Request, presented: PresentedKey) -> Caller:
    """Any valid key, or none unless read keys are required; spends one read."""
    access = get_access(request)
    caller = access.caller(request, presented, required=access.require_read_key)
    await access.limits.spend(Budget.READS, caller.identity)
    return caller


def _writer(request: Request, presented: str | None) -> Caller:
    caller = get_access(request).caller(request, presented, required=True)
    if caller.key is None or caller.key.role is not Role.WRITE:
        raise HTTPException(status.HTTP_403_FORBIDDEN, WRITE_KEY_REQUIRED)
    return caller


async def catalog_write_access(request: Request, presented: PresentedKey) -> Caller:
    """A write key; spends one catalog write."""
    caller = _writer(request, presented)
    await get_access(request).limits.spend(Budget.WRITES, caller.identity)
    return caller


async def event_write_access(request: Request, presented: PresentedKey) -> Caller:
    """A write key (the route spends the events budget by batch size)."""
    return _writer(request, presented)


ReadAccess = Annotated[Caller, Depends(read_access)]
CatalogWriteAccess = Annotated[Caller, Depends(catalog_write_access)]
EventWriteAccess = Annotated[Caller, Depends(event_write_access)]
