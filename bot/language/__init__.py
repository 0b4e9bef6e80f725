"""The command language and what the bot says: parsing `/draw ...` and button ids, the
en/zh message catalogue, text helpers and the errors users are shown."""
