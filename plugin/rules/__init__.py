"""The billing rule book as pure functions: therapy visits in, findings out.

Entry points: :func:`analyze` (a whole :class:`~fhir_mappings.model.VisitGrouping`),
:func:`analyze_visit`, :func:`analysis_to_json` (the ``check --format json`` shape), and the
:data:`CATALOGUE` of finding ids (I-6). No I/O here besides loading the PTP data file once.
"""

from plugin.rules.catalogue import (
    CATALOGUE,
    CatalogueEntry,
    RuleId,
    Severity,
    catalogue_markdown,
)
from plugin.rules.code_catalog import CodeCatalog, StaticCodeCatalog, default_code_catalog
from plugin.rules.counts import CodeCounts
from plugin.rules.engine import (
    Analysis,
    CodeBilling,
    VisitAnalysis,
    analysis_to_json,
    analyze,
    analyze_visit,
    billed_vs_allowed,
    finding_to_json,
    over_under_billed,
)
from plugin.rules.findings import Finding, FindingFacts, Fix
from plugin.rules.pair import PairResult, PairStatus
from plugin.rules.ptp import (
    PtpEdit,
    PtpFormatError,
    PtpTable,
    default_ptp_table,
    load_cms_ptp_file,
    load_ptp_csv,
    load_ptp_file,
)
from plugin.rules.units import ama_units, cms_allocations, units
from plugin.rules.vocabulary import CardPolicy, PairRule, PayerRule, VocabularyError, parse

__all__ = [
    "CATALOGUE",
    "Analysis",
    "CardPolicy",
    "CatalogueEntry",
    "CodeBilling",
    "CodeCatalog",
    "CodeCounts",
    "Finding",
    "FindingFacts",
    "Fix",
    "PairResult",
    "PairRule",
    "PairStatus",
    "PayerRule",
    "PtpEdit",
    "PtpFormatError",
    "PtpTable",
    "RuleId",
    "Severity",
    "StaticCodeCatalog",
    "VisitAnalysis",
    "VocabularyError",
    "ama_units",
    "analysis_to_json",
    "analyze",
    "analyze_visit",
    "billed_vs_allowed",
    "catalogue_markdown",
    "cms_allocations",
    "default_code_catalog",
    "default_ptp_table",
    "finding_to_json",
    "load_cms_ptp_file",
    "load_ptp_csv",
    "load_ptp_file",
    "over_under_billed",
    "parse",
    "units",
]
