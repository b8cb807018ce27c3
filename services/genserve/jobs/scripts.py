"""The job system's atomic steps, as Redis Lua scripts.

Every change of a job's state is one script, so Redis applies it whole or not at all, and no
two can interleave. Worker-side scripts are fenced: they take the attempt number the worker was
given by START and do nothing (returning why) unless the job is still RUNNING under that
attempt. A worker that stalled past its claim and woke up after another worker resumed the job
therefore cannot write progress, checkpoints or a result over the newer attempt's.

Keys (P = the prefix, "genserve:" by default):
  P jobs:queue                 stream of {job: id}; consumer group "workers"
  P jobs:active / jobs:running sets of job ids queued or running / running
  P job:<id>                   hash: the record (state, owner, step, losses, attempt, ...)
  P job:<id>:input             hash: content, style0..styleN (encoded images), weights (JSON)
  P job:<id>:checkpoint        the engine state (safetensors bytes) of the latest checkpoint
  P job:<id>:result            the result PNG
  P job:<id>:events            stream of events, the WatchJob log
  P owner:<o>:active           set of the owner's queued or running job ids
  P owner:<o>:jobs             sorted set (all scores 0) of the owner's job ids: ids sort by time
  P owner:<o>:idem:<key>       idempotency key → job id
Times are Redis server time in milliseconds, so machines' clocks do not matter.
"""

from __future__ import annotations

GROUP = "workers"

# ARGV: prefix. The queue stream and its consumer group, made unless the group exists: the
# gateway and every worker run it at start, and a worker again when a flushed Redis lost them.
ENSURE_GROUP = """
local made = redis.pcall('XGROUP', 'CREATE', ARGV[1] .. 'jobs:queue', 'workers', '0', 'MKSTREAM')
if type(made) == 'table' and made.err and not string.find(made.err, 'BUSYGROUP', 1, true) then
  return redis.error_reply(made.err)
end
return 'ok'
"""

_PRELUDE = """
local prefix = ARGV[1]
local id = ARGV[2]
local jobkey = prefix .. 'job:' .. id
local queue = prefix .. 'jobs:queue'

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function event(fields)
  return redis.call('XADD', jobkey .. ':events', '*', unpack(fields))
end

local function drop_entry()
  local entry = redis.call('HGET', jobkey, 'entry')
  if entry then
    redis.call('XACK', queue, 'workers', entry)
    redis.call('XDEL', queue, entry)
  end
end

-- The one way a job ends: one terminal state, one terminal event, its queue entry gone.
local function terminate(state, err, ttl_ms)
  local now = now_ms()
  local owner = redis.call('HGET', jobkey, 'owner')
  redis.call('HSET', jobkey, 'state', state, 'error', err, 'finished_ms', now, 'expires_ms', now + ttl_ms)
  redis.call('DEL', jobkey .. ':input', jobkey .. ':checkpoint')
  redis.call('SREM', prefix .. 'jobs:active', id)
  redis.call('SREM', prefix .. 'jobs:running', id)
  redis.call('SREM', prefix .. 'owner:' .. owner .. ':active', id)
  local h = redis.call('HMGET', jobkey, 'step', 'total_steps', 'losses', 'attempt', 'idem')
  event({'kind', 'state', 'state', state, 'step', h[1], 'total', h[2], 'losses', h[3], 'attempt', h[4],
         'time', now, 'error', err})
  for _, key in ipairs({jobkey, jobkey .. ':events', jobkey .. ':result'}) do
    redis.call('PEXPIRE', key, ttl_ms)
  end
  if h[5] ~= '' then
    redis.call('PEXPIRE', prefix .. 'owner:' .. owner .. ':idem:' .. h[5], ttl_ms)
  end
  drop_entry()
end

-- Fencing: the caller's attempt must still be the job's, and the job still RUNNING. A stale attempt
-- hears 'superseded' whatever became of the job since, so only the current one answers for its end.
local function fenced(attempt)
  local h = redis.call('HMGET', jobkey, 'state', 'attempt')
  if not h[1] then return 'gone' end
  if h[2] ~= attempt then return 'superseded' end
  if h[1] ~= 'RUNNING' then return h[1] end
  return nil
end
"""

# ARGV: prefix, id, owner, idempotency key, max active, max active per owner, total steps,
# params JSON, seed, preview_every, content, style count, weights JSON, style images...
SUBMIT = (
    _PRELUDE
    + """
local owner, idem = ARGV[3], ARGV[4]
local idem_key = prefix .. 'owner:' .. owner .. ':idem:' .. idem
if idem ~= '' then
  local existing = redis.call('GET', idem_key)
  if existing and redis.call('EXISTS', prefix .. 'job:' .. existing) == 1 then
    return {'existing', existing}
  end
end
if redis.call('SCARD', prefix .. 'jobs:active') >= tonumber(ARGV[5]) then return {'full', 'global'} end
if redis.call('SCARD', prefix .. 'owner:' .. owner .. ':active') >= tonumber(ARGV[6]) then return {'full', 'owner'} end
local now = now_ms()
redis.call('HSET', jobkey, 'id', id, 'owner', owner, 'state', 'QUEUED', 'step', 0, 'total_steps', ARGV[7],
  'losses', '', 'created_ms', now, 'started_ms', '', 'finished_ms', '', 'expires_ms', '', 'attempt', 0,
  'crashes', 0, 'error', '', 'idem', idem, 'params', ARGV[8], 'seed', ARGV[9], 'preview_every', ARGV[10],
  'checkpoint_step', 0, 'worker', '')
local input = {'content', ARGV[11], 'weights', ARGV[13]}
for i = 1, tonumber(ARGV[12]) do
  table.insert(input, 'style' .. (i - 1))
  table.insert(input, ARGV[13 + i])
end
redis.call('HSET', jobkey .. ':input', unpack(input))
redis.call('SADD', prefix .. 'jobs:active', id)
redis.call('SADD', prefix .. 'owner:' .. owner .. ':active', id)
redis.call('ZADD', prefix .. 'owner:' .. owner .. ':jobs', 0, id)
if idem ~= '' then redis.call('SET', idem_key, id) end
event({'kind', 'state', 'state', 'QUEUED', 'step', 0, 'total', ARGV[7], 'losses', '', 'attempt', 0,
       'time', now, 'error', ''})
redis.call('HSET', jobkey, 'entry', redis.call('XADD', queue, '*', 'job', id))
return {'created', id}
"""
)

# ARGV: prefix, id, queue entry id, consumer, max crashes, ttl ms.
# A worker took the entry (new, or claimed from a silent worker): start the next attempt.
START = (
    _PRELUDE
    + """
local entry = ARGV[3]
local state = redis.call('HGET', jobkey, 'state')
if not state then
  redis.call('XACK', queue, 'workers', entry)
  redis.call('XDEL', queue, entry)
  return {'gone'}
end
if state ~= 'QUEUED' and state ~= 'RUNNING' then
  redis.call('XACK', queue, 'workers', entry)
  redis.call('XDEL', queue, entry)
  return {'terminal', state}
end
redis.call('HSET', jobkey, 'entry', entry)
if state == 'RUNNING' then
  -- Its last worker went silent while running it (died, or lost its claim).
  local crashes = redis.call('HINCRBY', jobkey, 'crashes', 1)
  if crashes >= tonumber(ARGV[5]) then
    terminate('FAILED', 'dead-lettered: the worker running it was lost ' .. crashes .. ' times', tonumber(ARGV[6]))
    return {'dead', tostring(crashes)}
  end
end
local attempt = redis.call('HINCRBY', jobkey, 'attempt', 1)
local now = now_ms()
-- The record shows where this attempt starts: the checkpoint's step, not the lost attempt's last.
redis.call('HSET', jobkey, 'state', 'RUNNING', 'worker', ARGV[4], 'heartbeat_ms', now,
  'step', redis.call('HGET', jobkey, 'checkpoint_step'))
if redis.call('HGET', jobkey, 'started_ms') == '' then redis.call('HSET', jobkey, 'started_ms', now) end
redis.call('SADD', prefix .. 'jobs:running', id)
local h = redis.call('HMGET', jobkey, 'checkpoint_step', 'total_steps', 'losses')
if attempt == 1 then
  event({'kind', 'state', 'state', 'RUNNING', 'step', 0, 'total', h[2], 'losses', '', 'attempt', attempt,
         'time', now, 'error', ''})
else
  event({'kind', 'resumed', 'state', 'RUNNING', 'step', h[1], 'total', h[2], 'losses', h[3], 'attempt', attempt,
         'time', now, 'error', ''})
end
return {'run', tostring(attempt), h[1]}
"""
)

# ARGV: prefix, id, attempt, step, total, losses JSON, preview PNG ('' for none).
PROGRESS = (
    _PRELUDE
    + """
local refused = fenced(ARGV[3])
if refused then return refused end
local now = now_ms()
redis.call('HSET', jobkey, 'step', ARGV[4], 'total_steps', ARGV[5], 'losses', ARGV[6], 'heartbeat_ms', now)
local fields = {'kind', 'progress', 'state', 'RUNNING', 'step', ARGV[4], 'total', ARGV[5], 'losses', ARGV[6],
                'attempt', ARGV[3], 'time', now, 'error', ''}
if ARGV[7] ~= '' then
  table.insert(fields, 'preview')
  table.insert(fields, ARGV[7])
end
event(fields)
return 'ok'
"""
)

# ARGV: prefix, id, attempt, step, state bytes.
CHECKPOINT = (
    _PRELUDE
    + """
local refused = fenced(ARGV[3])
if refused then return refused end
redis.call('SET', jobkey .. ':checkpoint', ARGV[5])
redis.call('HSET', jobkey, 'checkpoint_step', ARGV[4])
return 'ok'
"""
)

# ARGV: prefix, id, attempt, consumer, entry. Keeps the claim fresh: resets the entry's idle time.
HEARTBEAT = (
    _PRELUDE
    + """
local refused = fenced(ARGV[3])
if refused then return refused end
redis.call('XCLAIM', queue, 'workers', ARGV[4], 0, ARGV[5], 'JUSTID')
redis.call('HSET', jobkey, 'heartbeat_ms', now_ms())
return 'ok'
"""
)

# ARGV: prefix, id, attempt, state (SUCCEEDED/FAILED), error, result PNG, ttl ms.
FINISH = (
    _PRELUDE
    + """
local refused = fenced(ARGV[3])
if refused then return refused end
if ARGV[4] == 'SUCCEEDED' then
  redis.call('SET', jobkey .. ':result', ARGV[6])
end
terminate(ARGV[4], ARGV[5], tonumber(ARGV[7]))
return 'ok'
"""
)

# ARGV: prefix, id, attempt, consumer, entry. A stopping worker hands its job back at once.
RELEASE = (
    _PRELUDE
    + """
local refused = fenced(ARGV[3])
if refused then return refused end
local now = now_ms()
redis.call('HSET', jobkey, 'state', 'QUEUED', 'worker', '')
redis.call('SREM', prefix .. 'jobs:running', id)
-- An idle time far past any claim timeout: the next worker that looks claims it.
redis.call('XCLAIM', queue, 'workers', ARGV[4], 0, ARGV[5], 'IDLE', 1000000000000, 'JUSTID')
local h = redis.call('HMGET', jobkey, 'step', 'total_steps', 'losses', 'attempt')
event({'kind', 'state', 'state', 'QUEUED', 'step', h[1], 'total', h[2], 'losses', h[3], 'attempt', h[4],
       'time', now, 'error', ''})
return 'ok'
"""
)

# ARGV: prefix, id, owner, ttl ms.
CANCEL = (
    _PRELUDE
    + """
local h = redis.call('HMGET', jobkey, 'state', 'owner')
if not h[1] or h[2] ~= ARGV[3] then return 'gone' end
if h[1] ~= 'QUEUED' and h[1] ~= 'RUNNING' then return h[1] end
terminate('CANCELLED', 'cancelled by the client', tonumber(ARGV[4]))
return 'ok'
"""
)
