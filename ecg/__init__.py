"""ECG ingest, analysis and rendering (formats in, one ECG model out)."""
