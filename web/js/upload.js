// Resumable uploads to the hub (its tus-like sessions, /api/v1/uploads): the body is a Blob
// assembled from File objects (nothing read into memory), sent in chunks at the offset the hub
// acknowledged. A clinic's link drops; when a chunk fails the upload waits (backoff, or until the
// browser is online again), asks the hub how far it got and carries on from there.

import { ApiError, SessionEnded, api, apiFetch } from "/static/js/api.js";

export const CHUNK_BYTES = 1024 * 1024;
const CHUNK_TYPE = "application/offset+octet-stream";
const BACKOFF_MS = [500, 1000, 2000, 4000, 8000, 15000];
const RETRYABLE = new Set([0, 408, 423, 425, 429, 500, 502, 503, 504]);

/** Does this file start like DICOM Part 10 ("DICM" after the 128-byte preamble)? */
export async function isDicomFile(file) {
  if (file.size < 132) return false;
  const head = new Uint8Array(await file.slice(128, 132).arrayBuffer());
  return head[0] === 0x44 && head[1] === 0x49 && head[2] === 0x43 && head[3] === 0x4d;
}

/** A STOW-RS body (multipart/related of application/dicom parts) as one Blob of the files. */
export function stowBody(files) {
  const boundary = `telehub-${crypto.randomUUID()}`;
  const parts = [];
  for (const file of files) {
    parts.push(`--${boundary}\r\nContent-Type: application/dicom\r\n\r\n`, file, "\r\n");
  }
  parts.push(`--${boundary}--\r\n`);
  return {
    blob: new Blob(parts),
    contentType: `multipart/related; type="application/dicom"; boundary=${boundary}`,
  };
}

function retryable(err) {
  if (err instanceof SessionEnded) return false;
  if (!(err instanceof ApiError)) return err && err.name !== "AbortError";
  return RETRYABLE.has(err.status) || err.code === "chunk_interrupted";
}

function pause(ms, signal) {
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      window.removeEventListener("online", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    window.addEventListener("online", done); // back online: try at once
    if (signal) signal.addEventListener("abort", done, { once: true });
  });
}

/**
 * Send `blob` as one upload session and return its processing answer ({status, result}).
 * onProgress(sentBytes, totalBytes); onState("uploading" | "reconnecting" | "processing").
 */
export async function resumableUpload(blob, contentType, { metadata = {}, onProgress, onState, signal } = {}) {
  const progress = onProgress || (() => {});
  const state = onState || (() => {});
  let failures = 0;

  /** Run step() until it works; a dropped link means wait, then step again. */
  async function withRetry(step) {
    for (;;) {
      if (signal && signal.aborted) throw new DOMException("aborted", "AbortError");
      try {
        const value = await step();
        if (failures) state("uploading");
        failures = 0;
        return value;
      } catch (err) {
        if (!retryable(err)) throw err;
        state("reconnecting");
        const wait = BACKOFF_MS[Math.min(failures, BACKOFF_MS.length - 1)];
        failures += 1;
        await pause(navigator.onLine === false ? 60_000 : wait, signal);
      }
    }
  }

  state("uploading");
  const session = await withRetry(() => api("POST", "/uploads", {
    size: blob.size,
    content_type: contentType,
    metadata,
  }));
  const path = `/uploads/${session.id}`;
  let offset = session.offset || 0;
  let lost = false; // after a failure the hub's offset is asked before sending again
  progress(offset, blob.size);

  while (offset < blob.size) {
    offset = await withRetry(async () => {
      if (lost) {
        const info = await api("GET", path);
        lost = false;
        return info.offset;
      }
      try {
        const response = await apiFetch(path, {
          method: "PATCH",
          signal,
          headers: { "Content-Type": CHUNK_TYPE, "Upload-Offset": String(offset), "Tus-Resumable": "1.0.0" },
          body: blob.slice(offset, Math.min(offset + CHUNK_BYTES, blob.size)),
        });
        return Number(response.headers.get("Upload-Offset"));
      } catch (err) {
        if (err instanceof ApiError && err.code === "offset_mismatch" && err.data) return Number(err.data.offset);
        lost = true;
        throw err;
      }
    });
    progress(offset, blob.size);
  }

  state("processing");
  for (;;) {
    const done = await withRetry(() => api("POST", `${path}/complete`));
    if (done.state === "done") return { status: done.status, result: done.result || {} };
    await pause(1000, signal); // still processing (a big body): ask again
  }
}
