"""The one message catalogue: every word a user reads, in English and Simplified Chinese.

Errors everywhere carry a key and params; `t(key, lang, **params)` turns them into text.  Both
languages have the same keys and the same placeholders (tests check), and `t` never raises: a
missing param stays visible as `{name}` rather than losing the whole message.
"""

from __future__ import annotations

import logging

logger = logging.getLogger(__name__)

LANGUAGES = ("en", "zh")
DEFAULT_LANGUAGE = "en"

# Optional params that add a line of their own when a message does not place them itself; they
# come last so an error always ends with the command to copy.
_HINTS = (("fits", "hint.fits"), ("example", "hint.example"))

_EN = {
    # Requests the model cannot take (engine/request.py)
    "error.prompt_empty": "Tell me what to draw: write a description after /draw.",
    "error.prompt_too_long": "That description is {length} characters long; the limit is {limit}. Please shorten it.",
    "error.size_multiple": "Width and height must both be multiples of {multiple} ({value} isn't).",
    "error.size_range": "Width and height must be between {min} and {max} pixels ({value} isn't).",
    "error.size_pixels": "{width}x{height} is too big for this model: at most {max_pixels} pixels in total.",
    "error.ratio_invalid": "I can't read “{ratio}” as an aspect ratio. Write it like 16:9.",
    "error.ratio_extreme": "{ratio} is too stretched; the most this model allows is {max_ratio}.",
    "error.steps_range": "Steps must be a whole number from {min} to {max} (you asked for {value}).",
    "error.cfg_range": "CFG must be between {min} and {max} (you asked for {value}).",
    "error.seed_range": "Seeds are whole numbers from 0 to {max} ({value} isn't); leave it out for a random one.",
    "error.source_missing": "I need a picture to start from: reply to one of my pictures.",
    "error.strength_range": "The variation strength must be between 0.05 and 1 (got {value}).",
    "error.strength_flag": "--strength must be a number between 0.1 and 0.95 (got {value}).",
    "error.region_invalid": "That picture can't be placed on the new canvas ({region}).",
    "error.upload_too_big": "That file is {size_mb} MB; a picture may be at most {limit_mb} MB.",
    "error.upload_too_many_pixels": "That picture is too large to open safely (more than {limit} megapixels).",
    "error.upload_not_image": "That file isn't a picture I can read, or it is cut short. Send a PNG, JPEG or WebP.",
    "error.upload_failed": "I couldn't download that picture. Please send it again.",
    "upload_first_frame": "That picture is animated: I started from its first frame.",
    "error.count_range": "I can draw {min} to {max} pictures at once (you asked for {value}).",
    "error.chaos_range": "--chaos must be a whole number from 0 to {max} (you asked for {value}).",
    "error.lora_count": "At most {max} --lora per picture (you gave {count}).",
    "error.lora_weight": "The weight of LoRA “{name}” must be a number from {min} to {max} (got {value}).",
    "error.lora_twice": "LoRA “{name}” is named twice; give it once, with one weight.",
    "error.lora_format": "I can't read “{value}” as a LoRA: write --lora name or --lora name:0.8.",
    "error.lora_unknown": "There's no LoRA called “{name}”. Closest installed: {closest}. /loras lists them all.",
    "lora_not_on_workers": "No drawing machine has the LoRA {names} right now, so I can't draw this. Nothing was "
    "charged. An admin can copy the same file to a worker's LoRA folder.",
    "error.lora_not_on_workers": "The drawing machines that had the LoRA {names} went away before this picture "
    "was drawn. Your quota was refunded; please try again later.",
    "error.lora_bad": "The LoRA “{name}” could not be loaded: its file does not fit this model. It is no "
    "longer offered until an admin replaces it. Your quota was refunded.",
    "error.invalid": "I can't draw that request as it is.",
    # Failures while drawing (engine/errors.py)
    "error.oom": "The GPU ran out of memory for this picture. Try a smaller size.",
    "error.bad_output": "The picture came out blank even after a safer retry. Please try another seed or prompt.",
    "error.bad_output_low_ram": "The picture came out blank, and this machine has too little memory to retry it "
    "in a safer precision. Please try another seed or prompt.",
    "error.cancelled": "The drawing was cancelled.",
    "error.undeliverable": "Picture #{job_id} was drawn, but this chat would not take it, so it is not posted "
    "here. It was drawn all the same, so it counts against your quota; it is kept in your /history "
    "(see /show #{job_id}).",
    "error.picture_missing": "Picture #{job_id} was drawn, but its file is gone from the server, so it cannot be "
    "sent. It does not count against your quota.",
    "error.model_not_found": "The drawing model couldn't be loaded. Please tell an admin.",
    "error.needs_gpu": "This model needs a GPU and none is available. Please tell an admin.",
    "error.engine": "Something went wrong while drawing. Please try again.",
    "error.unexpected": "Something went wrong on our side. Please try again in a moment.",
    "error.disk_full": "The picture was drawn but the server's disk is full, so it could not be kept. "
    "Your quota was refunded; please try again later.",
    # Discord slash-command descriptions (bot/adapters/discord/translator.py maps the English text to its key)
    "slash.draw": "Draw a picture from your words.",
    "slash.draw.prompt": "What to draw (flags like --ar 3:2 work here too)",
    "slash.draw.aspect_ratio": "Shape of the picture",
    "slash.draw.seed": "Same seed + same words = same picture",
    "slash.draw.steps": "More steps: more detail, slower",
    "slash.draw.cfg": "Follow the words more strictly (slower)",
    "slash.draw.negative": "Things to leave out (acts when cfg is above 1)",
    "slash.draw.raw": "Use your words exactly, without touch-ups",
    "slash.cancel": "Cancel a picture that is still waiting.",
    "slash.cancel.job": "The job number (default: your latest waiting one)",
    "slash.history": "Your pictures.",
    "slash.history.page": "Page number",
    "slash.show": "The details of one picture.",
    "slash.show.job": "The job number",
    "slash.quota": "Work units left today (a standard picture is 1).",
    "slash.settings": "Your language and PNG files.",
    "slash.settings.key": "The setting to change",
    "slash.settings.value": "Its new value",
    "slash.help": "How to use the bot.",
    "slash.ban": "Admins: stop someone drawing.",
    "slash.user": "@someone, a Discord id, or telegram:12345",
    "slash.ban.reason": "Why (kept in the audit log)",
    "slash.unban": "Admins: let someone draw again.",
    "slash.setquota": "Admins: work units a day for someone (0 = unlimited).",
    "slash.setquota.limit": "A number, unlimited or default",
    "slash.setrole": "Admins: move someone to a quota tier.",
    "slash.setrole.role": "The quota tier",
    "slash.queue": "Admins: everything waiting.",
    "slash.stats": "Admins: totals and workers.",
    "slash.draw.count": "How many pictures (each costs work units from your quota)",
    "slash.draw.style": "A style preset (see /styles)",
    "slash.draw.chaos": "0-100: more variety between seeds (0 = none)",
    "slash.draw.draft": "A quick half-size draft: four of them cost one unit; Enhance the one you like",
    "slash.draw.image": "Start from your own picture",
    "slash.draw.strength": "With a picture: how far to move away from it (0.1-0.95)",
    "slash.styles": "The style presets.",
    "slash.draw.lora": "A LoRA by name, or name:0.8 for its weight (see /loras)",
    "slash.loras": "The installed LoRAs.",
    "slash.lora": "Admins: read the LoRA folder again.",
    "slash.lora.action": "reload: read the folder now",
    "slash.block": "Admins: this server's blocked words.",
    "slash.sensitive": "Admins: words whose pictures go behind a spoiler.",
    "slash.wordlist.action": "add, remove or list",
    "slash.wordlist.term": "The word or phrase (re:pattern for a regular expression)",
    "command.styles": "Style presets for --style",
    "command.loras": "LoRAs for --lora",
    "error.worker_lost": "The GPU machines kept failing on this picture, so I gave up on it. Your quota was refunded.",
    "command.draw": "Draw a picture: /draw a fox in the snow --ar 3:2",
    "command.cancel": "Cancel a picture that is still waiting",
    "command.history": "Your pictures",
    "command.show": "The details of one picture: /show #12",
    "command.quota": "Work units left today",
    "command.settings": "Language and PNG files",
    "command.help": "How to draw, with examples",
    "error.internal": "Something went wrong on our side with #{job_id}. Your quota was refunded; please try again.",
    # The command language (bot/language/commands.py)
    "error.unknown_command": "I don't know the command {command}.",
    "error.usage": "That's not quite how {command} works.",
    "error.unknown_flag": "I don't know the option {flag}. The options are: {known}.",
    "error.repeated_flag": "{flag} appears more than once; keep just one.",
    "error.flag_conflict": "Use {first} or {second}, not both.",
    "error.missing_value": "{flag} needs a value after it.",
    "error.not_integer": "{flag} needs a whole number, and “{value}” isn't one.",
    "error.not_number": "{flag} needs a number like 1.5, and “{value}” isn't one.",
    "error.size_format": "Write the size as width x height, like 1024x768 (not “{value}”).",
    "error.job_id": "“{value}” isn't a job number. Job numbers look like #12.",
    "error.page_number": "“{value}” isn't a page number.",
    "error.quota_value": "A quota is work units a day (0 = unlimited), “unlimited” or “default”, not “{value}”.",
    "hint.example": "Try: {example}",
    "hint.fits": "A size that fits: {fits}",
    # The service
    "queued": "Queued as #{job_id}: number {position} in line, ready in about {eta}.",
    "queued_next": "Got it! #{job_id} is up next.",
    "running": "Drawing #{job_id}… step {step} of {steps}",
    "done_caption": "{prompt}\n#{job_id} · seed {seed} · {width}x{height} · {seconds}s",
    "cancelled": "Cancelled #{job_id}.",
    "cancel_none": "You have nothing waiting to cancel.",
    "cancel_not_yours": "That job belongs to someone else, so you can't cancel it.",
    "job_not_found": "I can't find job #{job_id}.",
    "quota_exceeded": "You've used all {limit} of today's work units. Your quota resets in {resets}.",
    "quota_status": "Today: {used} of {limit} work units used, {left} left. Your quota resets in {resets}.\n"
    "A 1024x1024 picture at 8 steps is 1 unit; bigger sizes, more steps and --cfg above 1 cost more.",
    "quota_unlimited": "Today: {used} work units used. You have no daily limit.",
    "job_too_big": "This job would cost {cost} work units; one job may cost at most {limit} here. {hint}",
    "fits_count": "Try --n {count}.",
    "fits_size": "Try --n {count} --size {width}x{height}.",
    "fits_fewer_steps": "Try fewer --steps or no --cfg.",
    "pending_limit": "You already have {max_pending} pictures waiting ({jobs}). Let one finish, or /cancel one.",
    "banned": "Sorry, you're not allowed to use this bot.",
    "chat_not_allowed": "I don't draw in this chat. An admin can allow it.",
    "not_admin": "Only bot admins can do that.",
    "user_not_found": "I can't tell who {target} is: names can be changed by anyone, so I only take ids. "
    "Write telegram:12345 or discord:12345, a Discord @mention, or reply to their message with the command.",
    "target_missing": "Say who: telegram:12345 or discord:12345, a Discord @mention, "
    "or reply to their message with the command.",
    "admin_done": "Done: {action} for {target}.",
    "admin_target": "{name} ({id})",
    "wordlist_full": "This chat's {list} is full ({limit} entries). Remove some before adding more.",
    "private_answer_sent": "Sent to you in a private chat with me.",
    "private_answer_wait": "Please wait {wait} before asking for that again.",
    "private_answer_short": "{text}\n(Start a private chat with me to see all of it.)",
    "action.ban": "ban",
    "action.unban": "unban",
    "action.setquota": "quota change",
    "action.setrole": "role change",
    "history_header": "Your pictures, page {page} of {pages}:",
    "history_line": "#{job_id} · {status} · {created} · {prompt}",
    "history_empty": "You haven't drawn anything yet. Try: /draw a red fox in the snow",
    "show_header": "Job #{job_id}",
    "show_line": "#{job_id} · {kind} · {status}\n{prompt}\nseed {seed} · {width}x{height} · {steps} steps · CFG {cfg}"
    " · {cost} units",
    "kind.txt2img": "new picture",
    "kind.variation": "variation",
    "kind.upscale": "upscale",
    "kind.outpaint": "zoom out / pan",
    "kind.upload": "drawn from your picture",
    "queue_header": "{count} in the queue:",
    "queue_line": "{position}. #{job_id} · {user} · {cost} units · {prompt}",
    "queue_empty": "The queue is empty. A perfect time to /draw something!",
    "queue_dead_header": "{count} pictures could not be delivered (given up):",
    "queue_dead_line": "#{job_id} · {user} · {platform} · {reason}",
    "stats": (
        "Jobs: {queued} queued, {running} drawing, {done} done, {failed} failed, {cancelled} cancelled.\n"
        "Users: {users} · GPU workers: {workers}"
    ),
    "stats_health": "Since start: {oom} out-of-memory fallbacks, {nan} safer-precision retries, {errors} failed sends.",
    "stats_units": "Work today: {spent} units charged to quotas; {waiting} units waiting in the queue.",
    "stats_recipes": "Weights the GPU workers run: {recipes} (none = the model's own; int8/int4 = quantized).",
    "stats_learned": "Jobs started on a lower-memory plan because their size ran out of memory lately: {learned}. "
    "Prompts that reused their encoding: {cached} of {encoded}.",
    "stats_redis_down": "Redis is unreachable: jobs are kept here and go out when it is back.",
    "stats_dead_deliveries": "Pictures given up on delivery: {count} (see /queue).",
    "stats_disk": "Disk: {free} GB free (new jobs are refused under {guard} GB).",
    "stats_disk_low": "Disk nearly full: {free} GB free, under the {guard} GB guard. New jobs are refused "
    "until space returns; free some (`easel prune --older-than 30d`) and drawing resumes by itself.",
    "admin_disk_low": "⚠️ Disk nearly full: {free} GB free, under the {guard} GB guard (EASEL_MIN_FREE_GB). "
    "New jobs are refused until space returns; free some with `easel prune --older-than 30d` and drawing "
    "resumes by itself.",
    "admin_disk_back": "✅ Disk space is back: {free} GB free (guard {guard} GB). Drawing resumed.",
    "stopping": "I'm restarting, so I can't take new drawings for a moment. Nothing was charged; "
    "please send it again in a minute.",
    "disk_full": "The server is out of disk space, so I can't take new drawings right now. "
    "Nothing was charged; please try again later.",
    "picture_expired": "This picture is no longer kept on the server, so I can't start from it. "
    "🎲 Reroll still works, and /show {job_id} has its seed and words.",
    "already_have": "I already have that request: #{job_id} ({status}).",
    "console_no_gpu_hint": "No NVIDIA GPU here, and the full model needs one. To try the bot anyway: "
    "`make tiny-model`, then `EASEL_MODEL=models/tiny-z-image make run` (pictures are noise, every path is real).",
    "delete_message_failed": "The picture's files are deleted, but I may not remove the message here. "
    "An admin of this chat can delete it.",
    "settings_current": (
        "Your settings:\n"
        "lang = {lang} (en or zh)\n"
        "png = {png} (on: also send the lossless PNG file)\n"
        "Change one like this: /settings lang zh"
    ),
    "settings_saved": "Saved: {key} = {value}.",
    "settings.on": "on",
    "settings.off": "off",
    "settings_unknown": "There's no setting called “{key}”. Settings: {keys}.",
    "help": (
        "🎨 I draw pictures from your words.\n"
        "\n"
        "/draw <description> [options]\n"
        "Options can go anywhere:\n"
        "--ar 3:2 · aspect ratio (1:1, 4:3, 3:2, 16:9, 21:9, 9:16…)\n"
        "--size 1024x768 · exact size in pixels (multiples of 16)\n"
        "--seed 42 · same seed + same words = same picture\n"
        "--steps 8 · more steps, more detail, slower\n"
        "--cfg 1.5 · follow your words more strictly (slower)\n"
        "--no text, frames · things to leave out\n"
        "--raw · use your words exactly, without my touch-ups\n"
        "--n 4 · several pictures at once, with consecutive seeds\n"
        "--style anime · a style preset; /styles lists them\n"
        "--lora ink:0.8 · a LoRA (up to 3); /loras lists them\n"
        "--strength 0.6 · how far from your own picture (0.1-0.95)\n"
        "--chaos 50 · more varied pictures (0-100)\n"
        "--draft · ¼-cost quick draft; ✨ Enhance (or reply “enhance”) draws it full size\n"
        "\n"
        "Examples:\n"
        "/draw a lighthouse at dusk, oil painting --ar 3:2\n"
        "/draw a cat astronaut --seed 42 --no helmet\n"
        "\n"
        "Reply to one of my pictures with words to draw a variation, or use the buttons under it "
        "(Zoom out and ⬅️➡️⬆️⬇️ draw around it).\n"
        "Your own picture: send it captioned /draw <words> (Discord: the image option), or reply to it with /draw.\n"
        "\n"
        "/cancel [#id] · cancel a picture still waiting\n"
        "/history [page] · your pictures\n"
        "/show #id · the details of one picture\n"
        "/quota · work units left today\n"
        "/styles · the style presets\n"
        "/settings · language (lang en|zh) and PNG files (png on|off)\n"
        "/help · this message"
    ),
    "help_admin": (
        "Admin commands (name users by id: telegram:12345, discord:12345, an @mention, "
        "or reply to their message):\n"
        "/ban <user> [reason] · stop someone drawing\n"
        "/unban <user> · let them draw again\n"
        "/setquota <user> <number|unlimited|default> · work units a day (0 = unlimited)\n"
        "/setrole <user> <role> · move someone to a quota tier\n"
        "/block add|remove|list [word] · this chat's blocked words (re:pattern for a regular expression)\n"
        "/sensitive add|remove|list [word] · words whose pictures go behind a spoiler\n"
        "/queue · everything waiting\n"
        "/stats · totals and workers\n"
        "/lora reload · read the LoRA folder again"
    ),
    "button.reroll": "🎲 Reroll",
    "button.vary_subtle": "Vary (subtle)",
    "button.vary_strong": "Vary (strong)",
    "button.upscale": "Upscale",
    "button.params": "Parameters",
    "button.delete": "🗑 Delete",
    "button.zoom_out_one_half": "🔍 Zoom out 1.5x",
    "button.zoom_out_double": "🔍 Zoom out 2x",
    "button.pan_left": "⬅️ Left",
    "button.pan_right": "➡️ Right",
    "button.pan_up": "⬆️ Up",
    "button.pan_down": "⬇️ Down",
    "button.enhance": "✨ Enhance",
    "button.enhance_n": "✨ E{n}",
    "params_chaos": "Chaos: {chaos}",
    "params_loras": "LoRA: {loras}",
    "params_expanded": "Drawn from (prompt enhancer): {expanded}",
    "show_expanded": "✨ {expanded}",
    "enhancer_note.timeout": "The prompt enhancer took too long, so this was drawn from your own words.",
    "enhancer_note.failed": "The prompt enhancer didn't answer, so this was drawn from your own words.",
    "enhancer_note.blocked": "The prompt enhancer wrote words not allowed here, so this was drawn from your own.",
    "params_draft": "Draft: press Enhance (or reply “enhance”) for the full-size picture",
    "deleted": "Deleted.",
    "delete_not_yours": "Only the person who asked for this picture can delete it.",
    "stale_button": "This button no longer works. Start again with /draw.",
    "unknown_slash_command": "This command no longer exists. Type / to see the ones I have now.",
    "params": (
        "Prompt: {prompt}\n"
        "Leave out: {negative}\n"
        "Seed: {seed} · Steps: {steps} · CFG: {cfg}\n"
        "Size: {width}x{height} · Model: {model}"
    ),
    "status.queued": "queued",
    "status.running": "drawing",
    "status.done": "done",
    "status.failed": "failed",
    "status.cancelled": "cancelled",
    "status.expired": "done, picture expired",
    "fallback_note": "Made with a lower-memory plan ({fallback}), so it took a little longer.",
    "retry_note": "The first try came out blank, so this one was redone at a safer precision.",
    "oversize_note": "The picture was re-encoded to fit the upload limit.",
    "token_expired_mention": "{mention} your picture is ready (the original message had expired, so here it is).",
    # Community features: moderation, batches, styles
    "blocked_prompt": "I can't draw that: the description uses a word that isn't allowed here. Please rephrase it.",
    "sensitive_nsfw_only": "That description can only be drawn in an age-restricted (NSFW) channel.",
    "cooldown": "Please wait {wait} before your next drawing.",
    "rate_limited": "Too many refused descriptions: you can draw again in {wait}.",
    "quota_not_enough": "This job costs {cost} work units and you have {left} left today. {hint}",
    "unknown_style": "There's no style called “{name}”. Styles: {styles}.",
    "styles_header": "Styles (add --style NAME to /draw):",
    "styles_line": "{name} · {description}",
    "loras_header": "LoRAs (add --lora NAME or --lora NAME:0.8 to /draw):",
    "loras_line": "{name} · {description} · triggers: {triggers} · weight {weight}",
    "loras_none": "No LoRAs are installed here.",
    "lora_reloaded": "LoRA folder read again: {count} installed ({names}).",
    "lora_reloaded_skipped": "Skipped {count}:",
    "lora_skipped_line": "{file} · {reason}",
    "batch_caption": "{prompt}\n#{job_id} · {count} pictures · seeds {first_seed}–{last_seed}"
    " · {width}x{height} · {seconds}s",
    "batch_buttons": "#{job_id}: U = upscale, V = vary; the number is the picture.",
    "button.upscale_n": "U{n}",
    "button.vary_n": "V{n}",
    "list.blocked": "blocked words",
    "list.sensitive": "sensitive words",
    "wordlist_added": "Added to this chat's {list}: {term}",
    "wordlist_exists": "That is already on this chat's {list}.",
    "wordlist_removed": "Removed from this chat's {list}: {term}",
    "wordlist_missing": "That isn't on this chat's {list}.",
    "wordlist_invalid": "That can't be used as a word-list entry: {reason}",
    "wordlist_listing": "This chat's {list} ({count}): {terms}\nThe bot's settings add {configured} more everywhere.",
    "wordlist_empty": "This chat has no {list} of its own. The bot's settings add {configured} everywhere.",
    "stats_moderation": "Moderation: {strikes} refused descriptions in the last 24 h. Rate-limited now: {limited}.",
    "limited_user": "{user} in {scope} ({strikes} refusals, {left} left)",
    "wordlist_regex_admins": "Only bot admins can add regular expressions (re:...). Plain words work for you.",
    "nobody": "nobody",
    "spoiler_note": "Marked sensitive: shown behind a spoiler.",
    "missing_note": "Only {drawn} of the {count} pictures could be drawn; the others were not charged.",
}

_ZH = {
    "error.prompt_empty": "请告诉我要画什么：在 /draw 后面写上画面描述。",
    "error.prompt_too_long": "描述有 {length} 个字符，最多只能 {limit} 个，请精简一下。",
    "error.size_multiple": "宽和高都必须是 {multiple} 的倍数（{value} 不是）。",
    "error.size_range": "宽和高必须在 {min} 到 {max} 像素之间（{value} 超出了范围）。",
    "error.size_pixels": "{width}x{height} 对这个模型来说太大了：总像素最多 {max_pixels}。",
    "error.ratio_invalid": "看不懂画面比例“{ratio}”，请写成 16:9 这样的格式。",
    "error.ratio_extreme": "{ratio} 太狭长了，这个模型最多支持 {max_ratio}。",
    "error.steps_range": "步数必须是 {min} 到 {max} 之间的整数（你填的是 {value}）。",
    "error.cfg_range": "CFG 必须在 {min} 到 {max} 之间（你填的是 {value}）。",
    "error.seed_range": "种子必须是 0 到 {max} 之间的整数（{value} 不行）。不填则随机。",
    "error.source_missing": "我需要一张图作为起点：请回复我画的某张图。",
    "error.strength_range": "变化强度必须在 0.05 到 1 之间（收到的是 {value}）。",
    "error.strength_flag": "--strength 必须是 0.1 到 0.95 之间的数字（收到的是 {value}）。",
    "error.region_invalid": "这张图放不进新画布（{region}）。",
    "error.upload_too_big": "这个文件有 {size_mb} MB，图片最大只能 {limit_mb} MB。",
    "error.upload_too_many_pixels": "这张图太大，无法安全打开（超过 {limit} 百万像素）。",
    "error.upload_not_image": "这个文件不是我能读取的图片，或者内容不完整。请发送 PNG、JPEG 或 WebP。",
    "error.upload_failed": "我没能下载这张图，请重新发送。",
    "upload_first_frame": "这是一张动图：我从它的第一帧开始画。",
    "error.count_range": "一次可以画 {min} 到 {max} 张（你填的是 {value}）。",
    "error.chaos_range": "--chaos 必须是 0 到 {max} 之间的整数（你填的是 {value}）。",
    "error.lora_count": "每张图最多 {max} 个 --lora（你给了 {count} 个）。",
    "error.lora_weight": "LoRA“{name}”的权重必须是 {min} 到 {max} 之间的数（你填的是 {value}）。",
    "error.lora_twice": "LoRA“{name}”写了两次；只写一次，配一个权重。",
    "error.lora_format": "看不懂“{value}”这个 LoRA：请写 --lora 名称 或 --lora 名称:0.8。",
    "error.lora_unknown": "没有名为“{name}”的 LoRA。最接近的已安装 LoRA：{closest}。用 /loras 查看全部。",
    "lora_not_on_workers": "目前没有任何绘图机器装有 LoRA {names}，所以画不了这张图。没有扣除额度。"
    "管理员可以把同一个文件复制到工作进程的 LoRA 文件夹。",
    "error.lora_not_on_workers": "装有 LoRA {names} 的绘图机器在这张图画出之前离开了。额度已退还，请稍后再试。",
    "error.lora_bad": "LoRA“{name}”无法加载：它的文件与这个模型不匹配。在管理员替换它之前不会再提供。额度已退还。",
    "error.invalid": "这个请求没法照原样画。",
    "error.oom": "画这张图时显卡内存不够了，试试小一点的尺寸。",
    "error.bad_output": "换用更稳妥的精度重试后，图片仍然是空白的。请换个种子或描述再试。",
    "error.bad_output_low_ram": "图片是空白的，而这台机器内存不够，无法换更稳妥的精度重试。请换个种子或描述再试。",
    "error.cancelled": "绘制已取消。",
    "error.undeliverable": "第 #{job_id} 张图已经画好，但这个聊天不接收它，所以没能发出来。"
    "图已经画了，所以仍计入你的额度；它保存在你的 /history 里（见 /show #{job_id}）。",
    "error.picture_missing": "第 #{job_id} 张图已经画好，但服务器上的文件不见了，没法发出来。这张不计入你的额度。",
    "error.model_not_found": "绘图模型加载失败，请联系管理员。",
    "error.needs_gpu": "这个模型需要显卡，但现在没有可用的显卡，请联系管理员。",
    "error.engine": "绘制时出了点问题，请再试一次。",
    "error.unexpected": "我们这边出了点问题，请稍后再试。",
    "error.disk_full": "图已经画好，但服务器磁盘已满，没能保存。额度已退回，请稍后再试。",
    "slash.draw": "根据你的描述画一张图。",
    "slash.draw.prompt": "要画什么（也可以直接写 --ar 3:2 这样的参数）",
    "slash.draw.aspect_ratio": "画面比例",
    "slash.draw.seed": "同样的种子 + 同样的描述 = 同一张图",
    "slash.draw.steps": "步数越多细节越多，也越慢",
    "slash.draw.cfg": "更严格地遵循描述（更慢）",
    "slash.draw.negative": "不想出现的内容（cfg 大于 1 时才生效）",
    "slash.draw.raw": "完全按原文画，不做画质增强",
    "slash.cancel": "取消还在排队的图。",
    "slash.cancel.job": "任务编号（默认：你最近一个排队中的任务）",
    "slash.history": "你的作品。",
    "slash.history.page": "页码",
    "slash.show": "查看某张图的详情。",
    "slash.show.job": "任务编号",
    "slash.quota": "今天还剩多少算力单位（一张标准图为 1）。",
    "slash.settings": "你的语言和 PNG 原图设置。",
    "slash.settings.key": "要修改的设置",
    "slash.settings.value": "新的值",
    "slash.help": "使用方法。",
    "slash.ban": "管理员：禁止某人画图。",
    "slash.user": "@某人、Discord ID 或 telegram:12345",
    "slash.ban.reason": "原因（记入审计日志）",
    "slash.unban": "管理员：恢复某人画图。",
    "slash.setquota": "管理员：设置某人每天的算力单位（0 = 不限）。",
    "slash.setquota.limit": "数字、unlimited 或 default",
    "slash.setrole": "管理员：调整某人的额度等级。",
    "slash.setrole.role": "额度等级",
    "slash.queue": "管理员：查看全部排队任务。",
    "slash.stats": "管理员：统计和工作节点。",
    "slash.draw.count": "画几张（每张都按算力单位计入额度）",
    "slash.draw.style": "风格预设（见 /styles）",
    "slash.draw.chaos": "0-100：让不同种子的构图差别更大（0 = 不加）",
    "slash.draw.draft": "半尺寸快速草图：四张只算一个单位；挑中的再精修",
    "slash.draw.image": "从你自己的图片开始",
    "slash.draw.strength": "从图片出发时，改动多大（0.1-0.95）",
    "slash.styles": "查看风格预设。",
    "slash.draw.lora": "LoRA 名称，或用 名称:0.8 指定权重（见 /loras）",
    "slash.loras": "查看已安装的 LoRA。",
    "slash.lora": "管理员：重新读取 LoRA 文件夹。",
    "slash.lora.action": "reload：立即读取文件夹",
    "slash.block": "管理员：本服务器的屏蔽词。",
    "slash.sensitive": "管理员：敏感词，对应的图以剧透遮罩发送。",
    "slash.wordlist.action": "add（添加）、remove（移除）或 list（查看）",
    "slash.wordlist.term": "词或短语（re:表达式 表示正则）",
    "command.styles": "查看 --style 可用的风格",
    "command.loras": "查看 --lora 可用的 LoRA",
    "error.worker_lost": "GPU 机器画这张图时接连出错，只好放弃了。额度已退还。",
    "command.draw": "画一张图：/draw 雪地里的狐狸 --ar 3:2",
    "command.cancel": "取消还在排队的图",
    "command.history": "你的作品",
    "command.show": "查看某张图的详情：/show #12",
    "command.quota": "今天还剩多少算力单位",
    "command.settings": "语言和 PNG 原图",
    "command.help": "画图方法和示例",
    "error.internal": "#{job_id} 在我们这边出了问题，额度已退还，请再试一次。",
    "error.unknown_command": "我不认识命令 {command}。",
    "error.usage": "{command} 的用法不太对。",
    "error.unknown_flag": "我不认识选项 {flag}。可用的选项有：{known}。",
    "error.repeated_flag": "{flag} 出现了不止一次，只保留一个就好。",
    "error.flag_conflict": "{first} 和 {second} 只能二选一。",
    "error.missing_value": "{flag} 后面需要跟一个值。",
    "error.not_integer": "{flag} 需要一个整数，“{value}”不是整数。",
    "error.not_number": "{flag} 需要一个数字（比如 1.5），“{value}”不是数字。",
    "error.size_format": "尺寸请写成 宽x高，比如 1024x768（而不是“{value}”）。",
    "error.job_id": "“{value}”不是任务编号，任务编号形如 #12。",
    "error.page_number": "“{value}”不是有效的页码。",
    "error.quota_value": "额度应为每天的算力单位数（0 表示不限）、“unlimited”或“default”，而不是“{value}”。",
    "hint.example": "试试：{example}",
    "hint.fits": "放得下的尺寸：{fits}",
    "queued": "已加入队列：#{job_id}，排第 {position} 位，大约 {eta} 后完成。",
    "queued_next": "收到！下一个就画 #{job_id}。",
    "running": "正在绘制 #{job_id}… 第 {step}/{steps} 步",
    "done_caption": "{prompt}\n#{job_id} · 种子 {seed} · {width}x{height} · {seconds} 秒",
    "cancelled": "已取消 #{job_id}。",
    "cancel_none": "你没有排队中的任务可以取消。",
    "cancel_not_yours": "这个任务不是你的，无法取消。",
    "job_not_found": "找不到任务 #{job_id}。",
    "quota_exceeded": "今天的 {limit} 个算力单位已经用完了，{resets} 后重置。",
    "quota_status": "今天已用 {used}/{limit} 个算力单位，还剩 {left} 个，{resets} 后重置。\n"
    "一张 1024x1024、8 步的图算 1 个单位；尺寸更大、步数更多或 --cfg 大于 1 都会多算。",
    "quota_unlimited": "今天已用 {used} 个算力单位，你没有每日上限。",
    "job_too_big": "这个任务要 {cost} 个算力单位，这里单个任务最多 {limit} 个。{hint}",
    "fits_count": "试试 --n {count}。",
    "fits_size": "试试 --n {count} --size {width}x{height}。",
    "fits_fewer_steps": "试试减少 --steps 或去掉 --cfg。",
    "pending_limit": "你已有 {max_pending} 张图在排队（{jobs}）。请等其中一张画完，或用 /cancel 取消一张。",
    "banned": "抱歉，你无法使用这个机器人。",
    "chat_not_allowed": "我不在这个聊天里画图，可以请管理员开启。",
    "not_admin": "只有机器人管理员可以这样做。",
    "user_not_found": "无法确定 {target} 是谁：名字谁都可以改，所以只认 ID。"
    "请写成 telegram:12345 或 discord:12345、Discord 的 @提及，或回复对方的消息并附上命令。",
    "target_missing": "请指明对象：telegram:12345 或 discord:12345、Discord 的 @提及，或回复对方的消息并附上命令。",
    "admin_done": "已完成对 {target} 的{action}。",
    "admin_target": "{name}（{id}）",
    "wordlist_full": "本群的{list}已满（{limit} 项），请先移除一些再添加。",
    "private_answer_sent": "已私信发给你。",
    "private_answer_wait": "请等 {wait} 后再查看。",
    "private_answer_short": "{text}\n（先和我开始私聊，才能看到完整内容。）",
    "action.ban": "封禁",
    "action.unban": "解封",
    "action.setquota": "额度调整",
    "action.setrole": "角色调整",
    "history_header": "你的作品，第 {page}/{pages} 页：",
    "history_line": "#{job_id} · {status} · {created} · {prompt}",
    "history_empty": "你还没有画过图。试试：/draw 雪地里的一只红狐狸",
    "show_header": "任务 #{job_id}",
    "show_line": "#{job_id} · {kind} · {status}\n{prompt}\n种子 {seed} · {width}x{height} · {steps} 步 · CFG {cfg}"
    " · {cost} 个单位",
    "kind.txt2img": "新图",
    "kind.variation": "变体",
    "kind.upscale": "放大",
    "kind.outpaint": "扩图",
    "kind.upload": "基于你的图片",
    "queue_header": "队列中共有 {count} 个任务：",
    "queue_line": "{position}. #{job_id} · {user} · {cost} 个单位 · {prompt}",
    "queue_empty": "队列是空的，正好来 /draw 一张！",
    "queue_dead_header": "{count} 张图没能发出去（已放弃）：",
    "queue_dead_line": "#{job_id} · {user} · {platform} · {reason}",
    "stats": (
        "任务：排队 {queued}，绘制中 {running}，已完成 {done}，失败 {failed}，已取消 {cancelled}。\n"
        "用户：{users} · GPU 工作进程：{workers}"
    ),
    "stats_health": "自启动以来：显存不足降级 {oom} 次，换更安全精度重试 {nan} 次，发送失败 {errors} 次。",
    "stats_units": "今天的算力：额度共扣 {spent} 个单位；队列中还有 {waiting} 个单位在等。",
    "stats_recipes": "显卡工作进程使用的权重：{recipes}（none = 模型原始权重；int8/int4 = 量化权重）。",
    "stats_learned": "{learned} 个任务因为同尺寸最近显存不足而直接用了省显存方案；"
    "{encoded} 条描述中有 {cached} 条复用了编码。",
    "stats_redis_down": "连不上 Redis：任务先留在这里，恢复后再发出。",
    "stats_dead_deliveries": "放弃发送的图：{count} 张（见 /queue）。",
    "stats_disk": "磁盘：剩余 {free} GB（低于 {guard} GB 时不接新任务）。",
    "stats_disk_low": "磁盘快满了：剩余 {free} GB，低于 {guard} GB 的警戒线。在空间恢复前不接新任务；"
    "清理一些（`easel prune --older-than 30d`）后会自动恢复绘图。",
    "admin_disk_low": "⚠️ 磁盘快满了：剩余 {free} GB，低于 {guard} GB 的警戒线（EASEL_MIN_FREE_GB）。"
    "在空间恢复前不接新任务；用 `easel prune --older-than 30d` 清理一些后会自动恢复绘图。",
    "admin_disk_back": "✅ 磁盘空间已恢复：剩余 {free} GB（警戒线 {guard} GB）。已恢复绘图。",
    "disk_full": "服务器磁盘空间不足，暂时不能接新的绘图。没有扣额度，请稍后再试。",
    "stopping": "机器人正在重启，暂时不能接新的绘图。没有扣额度，请过一分钟再发一次。",
    "picture_expired": "这张图已不在服务器上保存，无法以它为基础继续。"
    "🎲 重新生成仍然可用，/show {job_id} 里有它的种子和描述。",
    "already_have": "这条请求已经收到过了：#{job_id}（{status}）。",
    "console_no_gpu_hint": "这台机器没有 NVIDIA 显卡，完整模型需要显卡。想先试试机器人：运行 `make tiny-model`，"
    "再运行 `EASEL_MODEL=models/tiny-z-image make run`（画出来是噪点，但每条路径都是真的）。",
    "delete_message_failed": "图片文件已删除，但我没有权限删除这条消息，请本群管理员手动删除。",
    "settings_current": (
        "你的设置：\nlang = {lang}（en 或 zh）\npng = {png}（开启后同时发送无损 PNG 原图）\n修改示例：/settings lang en"
    ),
    "settings_saved": "已保存：{key} = {value}。",
    "settings.on": "开",
    "settings.off": "关",
    "settings_unknown": "没有名为“{key}”的设置。可用的设置：{keys}。",
    "help": (
        "🎨 我能根据文字画图。\n"
        "\n"
        "/draw <描述> [选项]\n"
        "选项可以放在任何位置：\n"
        "--ar 3:2 · 画面比例（1:1、4:3、3:2、16:9、21:9、9:16…）\n"
        "--size 1024x768 · 精确尺寸，单位像素（16 的倍数）\n"
        "--seed 42 · 相同的种子 + 相同的描述 = 相同的图\n"
        "--steps 8 · 步数越多细节越多，也越慢\n"
        "--cfg 1.5 · 更严格地遵循描述（会更慢）\n"
        "--no 文字, 边框 · 不想出现的内容\n"
        "--raw · 完全按原话画，不做润色\n"
        "--n 4 · 一次画几张，种子依次加一\n"
        "--style anime · 风格预设，用 /styles 查看\n"
        "--lora ink:0.8 · 使用 LoRA（最多 3 个），用 /loras 查看\n"
        "--strength 0.6 · 从你自己的图片出发时改动多大（0.1-0.95）\n"
        "--chaos 50 · 让每张图的构图差别更大（0-100）\n"
        "--draft · 快速草图，只花 ¼ 的算力；点“✨ 精修”（或回复“增强”）画成全尺寸\n"
        "中文输入法打出的 —— 也能当作 -- 使用。\n"
        "\n"
        "示例：\n"
        "/draw 黄昏时的灯塔，油画风格 --ar 3:2\n"
        "/draw 宇航员猫咪 --seed 42 --no 头盔\n"
        "\n"
        "回复我画的图并附上文字，可以画出变体；也可以用图下方的按钮（“缩小”和 ⬅️➡️⬆️⬇️ 会在四周补画）。\n"
        "从你自己的图片开始：发送图片并以 /draw <描述> 作为说明（Discord 上用 image 选项），"
        "或回复那张图片发送 /draw。\n"
        "\n"
        "/cancel [#编号] · 取消还在排队的图\n"
        "/history [页码] · 你的作品\n"
        "/show #编号 · 查看某张图的详情\n"
        "/quota · 今天还剩多少算力单位\n"
        "/styles · 查看风格预设\n"
        "/settings · 语言（lang en|zh）和 PNG 原图（png on|off）\n"
        "/help · 显示本帮助"
    ),
    "help_admin": (
        "管理员命令（用 ID 指明用户：telegram:12345、discord:12345、Discord 的 @提及，或回复对方的消息并附上命令）：\n"
        "/ban <用户> [原因] · 禁止某人画图\n"
        "/unban <用户> · 恢复某人画图\n"
        "/setquota <用户> <数量|unlimited|default> · 每天的算力单位（0 表示不限）\n"
        "/setrole <用户> <角色> · 调整某人的额度等级\n"
        "/block add|remove|list [词] · 本群的屏蔽词（re:表达式 表示正则）\n"
        "/sensitive add|remove|list [词] · 敏感词，对应的图以剧透遮罩发送\n"
        "/queue · 查看所有排队任务\n"
        "/stats · 统计和工作进程\n"
        "/lora reload · 重新读取 LoRA 文件夹"
    ),
    "button.reroll": "🎲 重画",
    "button.vary_subtle": "轻微变化",
    "button.vary_strong": "大幅变化",
    "button.upscale": "放大",
    "button.params": "参数",
    "button.delete": "🗑 删除",
    "button.zoom_out_one_half": "🔍 缩小 1.5 倍",
    "button.zoom_out_double": "🔍 缩小 2 倍",
    "button.pan_left": "⬅️ 向左",
    "button.pan_right": "➡️ 向右",
    "button.pan_up": "⬆️ 向上",
    "button.pan_down": "⬇️ 向下",
    "button.enhance": "✨ 精修",
    "button.enhance_n": "✨ E{n}",
    "params_chaos": "随机度：{chaos}",
    "params_loras": "LoRA：{loras}",
    "params_expanded": "实际绘制的描述（提示词扩写）：{expanded}",
    "show_expanded": "✨ {expanded}",
    "enhancer_note.timeout": "提示词扩写超时，这张按你的原话画。",
    "enhancer_note.failed": "提示词扩写服务没有回应，这张按你的原话画。",
    "enhancer_note.blocked": "提示词扩写写出了这里不允许的内容，这张按你的原话画。",
    "params_draft": "草图：点“精修”（或回复“增强”）得到全尺寸的图",
    "deleted": "已删除。",
    "delete_not_yours": "只有请求这张图的人才能删除它。",
    "stale_button": "这个按钮已失效，请用 /draw 重新开始。",
    "unknown_slash_command": "这个命令已不存在。输入 / 查看现有的命令。",
    "params": (
        "描述：{prompt}\n"
        "排除：{negative}\n"
        "种子：{seed} · 步数：{steps} · CFG：{cfg}\n"
        "尺寸：{width}x{height} · 模型：{model}"
    ),
    "status.queued": "排队中",
    "status.running": "绘制中",
    "status.done": "已完成",
    "status.failed": "失败",
    "status.cancelled": "已取消",
    "status.expired": "已完成，图片已过期",
    "fallback_note": "这张图用了省显存的方案（{fallback}），所以慢了一点。",
    "retry_note": "第一次生成是空白的，这张已用更稳妥的精度重画。",
    "oversize_note": "图片已重新压缩，以符合上传大小限制。",
    "token_expired_mention": "{mention} 你的图画好了（原消息已过期，所以发在这里）。",
    "blocked_prompt": "这段描述里有本群不允许的词，我不能画。请换个说法。",
    "sensitive_nsfw_only": "这段描述只能在年龄限制（NSFW）频道里画。",
    "cooldown": "请等 {wait} 后再画下一张。",
    "rate_limited": "被拒绝的描述太多了：{wait} 后才能继续画图。",
    "quota_not_enough": "这个任务要 {cost} 个算力单位，你今天还剩 {left} 个。{hint}",
    "unknown_style": "没有名为“{name}”的风格。可用风格：{styles}。",
    "styles_header": "风格（在 /draw 后加 --style 名称）：",
    "styles_line": "{name} · {description}",
    "loras_header": "LoRA（在 /draw 后加 --lora 名称 或 --lora 名称:0.8）：",
    "loras_line": "{name} · {description} · 触发词：{triggers} · 权重 {weight}",
    "loras_none": "这里还没有安装 LoRA。",
    "lora_reloaded": "已重新读取 LoRA 文件夹：已安装 {count} 个（{names}）。",
    "lora_reloaded_skipped": "跳过 {count} 个：",
    "lora_skipped_line": "{file} · {reason}",
    "batch_caption": "{prompt}\n#{job_id} · {count} 张 · 种子 {first_seed}–{last_seed}"
    " · {width}x{height} · {seconds} 秒",
    "batch_buttons": "#{job_id}：U = 放大，V = 变化，数字是第几张图。",
    "button.upscale_n": "U{n}",
    "button.vary_n": "V{n}",
    "list.blocked": "屏蔽词",
    "list.sensitive": "敏感词",
    "wordlist_added": "已加入本群的{list}：{term}",
    "wordlist_exists": "本群的{list}里已经有这一项了。",
    "wordlist_removed": "已从本群的{list}移除：{term}",
    "wordlist_missing": "本群的{list}里没有这一项。",
    "wordlist_invalid": "这一项无法使用：{reason}",
    "wordlist_listing": "本群的{list}（{count} 项）：{terms}\n机器人设置里另有 {configured} 项，在所有地方生效。",
    "wordlist_empty": "本群没有自己的{list}。机器人设置里有 {configured} 项，在所有地方生效。",
    "stats_moderation": "审核：过去 24 小时拒绝了 {strikes} 条描述。当前被限速：{limited}。",
    "limited_user": "{user} 在 {scope}（被拒 {strikes} 次，还剩 {left}）",
    "wordlist_regex_admins": "只有机器人管理员可以添加正则表达式（re:...），普通词语可以直接添加。",
    "nobody": "无",
    "spoiler_note": "已标记为敏感内容，图片以剧透遮罩显示。",
    "missing_note": "{count} 张图只画成了 {drawn} 张，没画成的不扣额度。",
}

CATALOGUE: dict[str, dict[str, str]] = {"en": _EN, "zh": _ZH}


class _KeepMissing(dict):
    """format_map mapping that leaves an unknown `{name}` in the text instead of raising."""

    def __missing__(self, name: str) -> str:
        return "{" + name + "}"


def t(key: str, lang: str, /, **params: object) -> str:
    """The message `key` in `lang` (English when unknown), filled with params; never raises.

    Positional-only, because messages have `{key}` and `{lang}` placeholders of their own."""
    table = CATALOGUE.get(lang, CATALOGUE[DEFAULT_LANGUAGE])
    template = table.get(key) or CATALOGUE[DEFAULT_LANGUAGE].get(key)
    if template is None:
        logger.warning("message key %r is missing from the catalogue", key)
        if key.startswith("error.") and key != "error.engine":
            # A failure named by a newer remote worker: a plain sentence rather than the bare key.
            return t("error.engine", lang)
        return key
    shown = _KeepMissing({name: _display(value) for name, value in params.items()})
    try:
        text = template.format_map(shown)
    except (ValueError, IndexError, AttributeError):
        logger.warning("message %r could not be formatted with %r", key, sorted(params))
        text = template
    for param, hint in _HINTS:
        if params.get(param) is not None and "{" + param + "}" not in template:
            text += "\n" + t(hint, lang, **{param: params[param]})
    return text


def _display(value: object) -> object:
    # Floats reach messages as seconds and CFG values: two decimals are plenty, `3.0` reads as `3`.
    if isinstance(value, float):
        return f"{value:.2f}".rstrip("0").rstrip(".") if abs(value) < 1e15 else f"{value:g}"
    if isinstance(value, tuple | list) and len(value) == 2 and all(isinstance(side, int) for side in value):
        return f"{value[0]}x{value[1]}"
    return value


def language_for(code: str | None) -> str:
    """The catalogue language for a platform locale (`zh-CN`, `zh_TW`, `zh-hans`, `en-GB`, None)."""
    if code and code.strip().lower().replace("_", "-").split("-")[0] == "zh":
        return "zh"
    return DEFAULT_LANGUAGE
