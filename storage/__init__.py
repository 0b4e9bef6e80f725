"""easel's storage: SQLite (aiosqlite, WAL) and images on disk.  No chat types, no torch."""

from storage.audit import AuditEntry
from storage.db import Database
from storage.images import ImageStore
from storage.jobs import Acceptance, Job, JobStatus, Outcome
from storage.migrations import SchemaTooNew
from storage.users import User

__all__ = [
    "Acceptance",
    "AuditEntry",
    "Database",
    "ImageStore",
    "Job",
    "JobStatus",
    "Outcome",
    "SchemaTooNew",
    "User",
]
