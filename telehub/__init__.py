"""telehub: a remote-diagnosis hub for medical consortia."""
