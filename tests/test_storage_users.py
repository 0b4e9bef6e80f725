"""Users: created on first sight, updated without trampling choices the user made."""

import pytest

from storage import Database


@pytest.fixture
async def db(tmp_path):
    database = await Database.open(tmp_path / "easel.db")
    yield database
    await database.close()


async def test_get_or_create_creates_once_with_defaults(db):
    first = await db.users.get_or_create("telegram", "100", name="Ada", language="en")
    again = await db.users.get_or_create("telegram", "100", name="Ada", language="zh")
    assert first == again
    assert (first.role, first.banned, first.settings, first.quota_override) == ("member", False, {}, None)
    assert first.created_at.endswith("Z")
    assert await db.users.count() == 1


async def test_same_platform_id_on_another_platform_is_another_user(db):
    telegram = await db.users.get_or_create("telegram", "100")
    discord = await db.users.get_or_create("discord", "100")
    assert telegram.id != discord.id
    assert await db.users.count() == 2


async def test_a_changed_name_is_updated_but_a_missing_name_keeps_the_old(db):
    user = await db.users.get_or_create("discord", "5", name="old")
    assert (await db.users.get_or_create("discord", "5", name="new")).name == "new"
    assert (await db.users.get_or_create("discord", "5")).name == "new"
    assert (await db.users.get(user.id)).name == "new"


async def test_language_hint_fills_only_an_empty_language(db):
    user = await db.users.get_or_create("telegram", "1")
    assert user.language is None
    assert (await db.users.get_or_create("telegram", "1", language="zh")).language == "zh"
    await db.users.set_language(user.id, "en")
    assert (await db.users.get_or_create("telegram", "1", language="zh")).language == "en"


async def test_admin_setters(db):
    user = await db.users.get_or_create("telegram", "9")
    assert await db.users.set_banned(user.id, True)
    assert await db.users.set_role(user.id, "vip")
    assert await db.users.set_quota_override(user.id, 200)
    changed = await db.users.get(user.id)
    assert (changed.banned, changed.role, changed.quota_override) == (True, "vip", 200)
    await db.users.set_quota_override(user.id, None)
    await db.users.set_banned(user.id, False)
    restored = await db.users.get(user.id)
    assert (restored.banned, restored.quota_override) == (False, None)


async def test_setters_on_an_unknown_user_say_so(db):
    assert not await db.users.set_banned(12345, True)
    assert not await db.users.set_setting(12345, "enhance", False)
    assert await db.users.get(12345) is None
    assert await db.users.find("telegram", "nobody") is None


async def test_set_setting_merges_keys(db):
    user = await db.users.get_or_create("telegram", "3")
    await db.users.set_setting(user.id, "enhance", False)
    await db.users.set_setting(user.id, "ratio", "3:2")
    await db.users.set_setting(user.id, "enhance", True)
    assert (await db.users.get(user.id)).settings == {"enhance": True, "ratio": "3:2"}


async def test_hostile_names_are_stored_verbatim(db):
    name = 'Robert\'); DROP TABLE users; -- "quoted" 名字'
    user = await db.users.get_or_create("discord", "x'; --", name=name)
    assert (await db.users.find("discord", "x'; --")).name == name
    assert user.platform_id == "x'; --"
    assert await db.users.count() == 1
