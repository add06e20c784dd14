"""FHIR R4 / R4B / R5 resources -> the therapy domain model. No HTTP here."""
