"""The audit log: admin actions recorded with their details, read back newest first."""

import pytest

from storage import Database


@pytest.fixture
async def db(tmp_path):
    database = await Database.open(tmp_path / "easel.db")
    yield database
    await database.close()


async def test_record_and_read_back_newest_first(db):
    admin = await db.users.get_or_create("telegram", "admin")
    await db.audit.record(admin.id, "ban", "telegram:99", {"reason": "spam'); DROP TABLE audit; --"})
    await db.audit.record(admin.id, "quota", "telegram:98", {"limit": 100})
    await db.audit.record(None, "purge", "images", None)
    entries = await db.audit.recent()
    assert [(e.actor_user_id, e.action, e.target) for e in entries] == [
        (None, "purge", "images"),
        (admin.id, "quota", "telegram:98"),
        (admin.id, "ban", "telegram:99"),
    ]
    assert entries[0].details == {}
    assert entries[2].details == {"reason": "spam'); DROP TABLE audit; --"}
    assert entries[0].created_at.endswith("Z")


async def test_recent_respects_the_limit(db):
    for n in range(5):
        await db.audit.record(None, "tick", str(n))
    assert [e.target for e in await db.audit.recent(limit=2)] == ["4", "3"]
