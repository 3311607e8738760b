"""The only code that knows google-cloud-spanner's objects and private fields.

``client_async`` speaks to the client's asyncio objects; ``client`` to its blocking ones. When the
official client changes, only this folder changes.
"""

from .client import REGULAR_SESSIONS_ENV

__all__ = ["REGULAR_SESSIONS_ENV"]
