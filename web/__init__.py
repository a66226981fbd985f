"""The browser front-end: static files served by the hub (no build step, no CDN)."""
