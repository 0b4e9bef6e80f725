"""The Lua scripts behind every change of a job's state in Redis (see `bot.scale.protocol`).

Each runs atomically, so a job is handed out, begun, cancelled or finished exactly once; each is
safe to run twice (the client retries once on a dropped connection).  XACK/XDEL go through
`pcall`: on a Redis that lost the stream they are no-ops, not errors.
"""

# KEYS: job hash, jobs stream.  ARGV: job id, fingerprint, request JSON, source PNG or '', ttl, force.
# Returns the existing state when this very job is already in Redis (unless forced), else hands it
# out: 'new'.  A cancelled one is adopted too (the bot then records the cancel): with remote workers
# the bot never cancels on its way out, so 'cancelled' here is always a user's cancel.
SUBMIT = """
local current = redis.call('HMGET', KEYS[1], 'state', 'fingerprint')
if ARGV[6] ~= '1' and current[1] and current[2] == ARGV[2] then
  return current[1]
end
redis.call('DEL', KEYS[1])
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[1], 'state', 'queued', 'fingerprint', ARGV[2], 'request', ARGV[3], 'entry', entry,
           'attempts', '0', 'stream', KEYS[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'source', ARGV[4]) end
redis.call('EXPIRE', KEYS[1], ARGV[5])
return 'new'
"""

# KEYS: job hash, jobs stream.  {state, fingerprint, 1 if the stream entry exists} or {} (one snapshot:
# a worker finishing in between cannot make a live job look lost).
CHECK = """
local h = redis.call('HMGET', KEYS[1], 'state', 'fingerprint', 'entry')
if not h[1] then return {} end
local alive = 0
if h[3] and #redis.call('XRANGE', KEYS[2], h[3], h[3], 'COUNT', 1) > 0 then alive = 1 end
return {h[1], h[2] or '', alive}
"""

# KEYS: job hash, jobs stream, events.  ARGV: entry, group, worker id, job id, now.
# {'run', request, source} when the worker should draw; otherwise why not.
BEGIN = """
local h = redis.call('HMGET', KEYS[1], 'state', 'entry', 'cancel')
local function drop()
  redis.pcall('XACK', KEYS[2], ARGV[2], ARGV[1])
  redis.pcall('XDEL', KEYS[2], ARGV[1])
end
if not h[1] or h[2] ~= ARGV[1] then drop() return {'gone'} end
if h[1] ~= 'queued' and h[1] ~= 'running' then drop() return {h[1]} end
if h[3] == '1' then
  drop()
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  redis.call('HDEL', KEYS[1], 'source')
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'type', 'finished', 'job', ARGV[4], 'state', 'cancelled')
  return {'cancelled'}
end
redis.call('HSET', KEYS[1], 'state', 'running', 'worker', ARGV[3], 'started', ARGV[5])
redis.call('HINCRBY', KEYS[1], 'attempts', '1')
return {'run', redis.call('HGET', KEYS[1], 'request'), redis.call('HGET', KEYS[1], 'source') or ''}
"""

# KEYS: job hash, jobs stream, events, dead.  ARGV: entry, group, job id, state, meta JSON, ttl,
# dead-letter reason or '', then PNG images.  1 if this call decided the outcome, 0 if it was late.
FINISH = """
local h = redis.call('HMGET', KEYS[1], 'state', 'entry', 'request')
redis.pcall('XACK', KEYS[2], ARGV[2], ARGV[1])
redis.pcall('XDEL', KEYS[2], ARGV[1])
if not h[1] or h[2] ~= ARGV[1] or (h[1] ~= 'queued' and h[1] ~= 'running') then return 0 end
redis.call('HSET', KEYS[1], 'state', ARGV[4], 'meta', ARGV[5], 'images', tostring(#ARGV - 7))
for i = 8, #ARGV do redis.call('HSET', KEYS[1], 'image:' .. (i - 8), ARGV[i]) end
redis.call('HDEL', KEYS[1], 'source')
redis.call('EXPIRE', KEYS[1], ARGV[6])
if ARGV[7] ~= '' then
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', '1000', '*', 'job', ARGV[3], 'entry', ARGV[1], 'reason', ARGV[7],
             'request', h[3])
end
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'type', 'finished', 'job', ARGV[3], 'state', ARGV[4])
return 1
"""

# KEYS: job hash, jobs stream, events.  ARGV: job id, group.
# 2: cancelled before any worker began it; 1: the running worker is asked to stop; 0: too late.
CANCEL = """
local h = redis.call('HMGET', KEYS[1], 'state', 'entry')
if h[1] == 'queued' then
  redis.pcall('XACK', KEYS[2], ARGV[2], h[2])
  redis.pcall('XDEL', KEYS[2], h[2])
  redis.call('HSET', KEYS[1], 'state', 'cancelled')
  redis.call('HDEL', KEYS[1], 'source')
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'type', 'finished', 'job', ARGV[1], 'state', 'cancelled')
  return 2
end
if h[1] == 'running' then redis.call('HSET', KEYS[1], 'cancel', '1') return 1 end
return 0
"""

# KEYS: jobs stream, job hash.  ARGV: group, consumer, entry, '1' to reset the entry's idle time.
# -1: the entry is no longer this worker's; 1: cancel requested; 0: carry on.
HEARTBEAT = """
local mine = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1, ARGV[2])
if #mine == 0 then return -1 end
if ARGV[4] == '1' then redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID') end
if redis.call('HGET', KEYS[2], 'cancel') == '1' then return 1 end
return 0
"""

# KEYS: jobs stream.  ARGV: group, consumer.  Deletes the consumer only while it holds nothing, in one
# step: a worker restarting under the same name between a check and DELCONSUMER would otherwise lose
# the entry it had just read (pending entries of a deleted consumer become unclaimable).
FORGET = """
if #redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', 1, ARGV[2]) > 0 then return 0 end
return redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
"""

# KEYS: job hash, its stream, events.  ARGV: job id, group, meta JSON, ttl, min idle ms.
# Fails a job no live worker can draw (its LoRA files are on no live worker): 1 if it was waiting, or
# running on a worker that stopped heartbeating it for min idle ms; 0 while a worker draws it.
UNSERVED = """
local h = redis.call('HMGET', KEYS[1], 'state', 'entry')
if h[1] == 'running' then
  local mine = redis.call('XPENDING', KEYS[2], ARGV[2], 'IDLE', ARGV[5], h[2], h[2], 1)
  if #mine == 0 then return 0 end
elseif h[1] ~= 'queued' then
  return 0
end
redis.pcall('XACK', KEYS[2], ARGV[2], h[2])
redis.pcall('XDEL', KEYS[2], h[2])
redis.call('HSET', KEYS[1], 'state', 'failed', 'meta', ARGV[3], 'images', '0')
redis.call('HDEL', KEYS[1], 'source')
redis.call('EXPIRE', KEYS[1], ARGV[4])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', '1000', '*', 'type', 'finished', 'job', ARGV[1], 'state', 'failed')
return 1
"""
