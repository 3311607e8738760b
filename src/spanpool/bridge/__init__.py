"""The only code that knows google-cloud-spanner's objects and private fields.

``client_async`` sends the pools' RPCs through the client's asyncio objects, and ``client``
(generated from it) through its blocking ones; ``common`` holds what does not talk to the
server, ``at_exit`` deletes an asyncio pool's sessions once its event loop is gone. When the
official client changes, only this folder changes.
"""

from .common import REGULAR_SESSIONS_ENV

__all__ = ["REGULAR_SESSIONS_ENV"]
