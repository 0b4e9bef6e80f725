"""Community rules that admins edit: moderation (bans, strikes, word lists), style presets
and the watched files they are read from."""
