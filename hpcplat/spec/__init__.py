"""The job spec: one typed, validated description of a training request (see :mod:`.model`)."""

from hpcplat.spec.files import Document, load_spec_file, read_document
from hpcplat.spec.model import (
    DatasetRef,
    Environment,
    JobSpec,
    ParamValue,
    Problem,
    Resources,
    SpecError,
)
from hpcplat.spec.units import format_memory_mb, format_time_minutes, parse_memory_mb, parse_time_minutes

__all__ = [
    "DatasetRef",
    "Document",
    "Environment",
    "JobSpec",
    "ParamValue",
    "Problem",
    "Resources",
    "SpecError",
    "format_memory_mb",
    "format_time_minutes",
    "load_spec_file",
    "parse_memory_mb",
    "parse_time_minutes",
    "read_document",
]
