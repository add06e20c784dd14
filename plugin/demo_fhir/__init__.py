"""``therapy-cds demo-fhir``: a read-only FHIR R4 server over FHIR files, for demonstrations.

A SMART app or a CDS service needs a FHIR server holding therapy visits to be shown working;
public test servers hold none. This package serves the sample bundles (or any folders of FHIR
JSON) over the FHIR REST API: ``GET /metadata``, read, and search by ``_id``, patient, subject,
encounter, dates and status, with paging. It does no authorization: put a SMART launcher in
front of it for the SMART app (see the README).

- :mod:`plugin.demo_fhir.store` reads the files into one set of resources with unique ids;
- :mod:`plugin.demo_fhir.search` parses search parameters and matches them (FHIR R4 semantics);
- :mod:`plugin.demo_fhir.server` is the FastAPI application.
"""

from __future__ import annotations

from plugin.demo_fhir.server import create_demo_app
from plugin.demo_fhir.store import DemoFhirError, Example, Store, load_store

__all__ = ["DemoFhirError", "Example", "Store", "create_demo_app", "load_store"]
