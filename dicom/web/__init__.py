"""DICOMweb under ``/dicomweb``: STOW-RS, QIDO-RS and WADO-RS (PS3.18)."""
