// What both viewers share about their view state (mirrored in consults; the hub validates the
// same ranges in telehub/consult_sync.py).

export const clamp = (v, lo, hi) => Math.min(hi, Math.max(lo, v));

/** A pointer from a remote state: {x, y} within 0..1 of the picture, or null. */
export function remotePointerOf(pointer) {
  return pointer && Number.isFinite(pointer.x) && Number.isFinite(pointer.y)
    ? { x: clamp(pointer.x, 0, 1), y: clamp(pointer.y, 0, 1) }
    : null;
}
