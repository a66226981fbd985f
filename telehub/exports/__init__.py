"""A report version leaves the hub in three forms: a PDF for people, a FHIR R4 DiagnosticReport
for other systems, and a DICOM Basic Text SR stored with the study for PACS and viewers. All
three are rendered from one :class:`telehub.exports.document.ReportDocument`."""
