"""DICOM adapters: the DIMSE receiver (pynetdicom) and, later, DICOMweb."""
