"""The gateway's call handling, by side: the caller's call flow (answer, IVR, queue, callback)
and the agent's leg (ringing, bridging, hold, transfer), over the live calls they share."""
