"""Consult media on the hub: aiortc peers per participant, relay, recording (issue 6).

The signaling side (sessions, tokens, WebSocket) lives in ``telehub.consults`` and calls
:mod:`telehub.media.sessions`; this package knows nothing about the database.
"""
