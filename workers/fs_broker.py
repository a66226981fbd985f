"""The embedded mode's broker: kombu's filesystem transport with atomic message files.

kombu writes a message file in place while a consumer may already be listing the folder, so a
worker can read a half-written file, fail to decode it and stop ("Unrecoverable error:
JSONDecodeError"); we saw exactly that under test load. Here a message is written to a
temporary file and renamed into the queue folder, so a consumer only ever sees whole messages.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from time import monotonic

from kombu.exceptions import ChannelError
from kombu.transport import filesystem
from kombu.utils.encoding import str_to_bytes
from kombu.utils.json import dumps


class Channel(filesystem.Channel):
    def _put(self, queue, payload, **kwargs):  # type: ignore[no-untyped-def]
        filename = f"{int(round(monotonic() * 1000))}_{uuid.uuid4()}.{queue}.msg"
        incoming = os.path.join(os.path.dirname(self.data_folder_out.rstrip("/")), "incoming")
        os.makedirs(incoming, exist_ok=True)
        try:
            fd, tmp = tempfile.mkstemp(dir=incoming)
            with os.fdopen(fd, "wb") as fh:
                fh.write(str_to_bytes(dumps(payload)))
            os.replace(tmp, os.path.join(self.data_folder_out, filename))
        except OSError as exc:
            raise ChannelError(f"cannot add message {filename!r}: {exc}") from exc


class Transport(filesystem.Transport):
    Channel = Channel
