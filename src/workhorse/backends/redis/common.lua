-- Prepended to every script of this folder: the key layout, the clock, and the index moves
-- that keep a job's hash and every index pointing at it consistent.
--
-- KEYS[1] is the namespace prefix "{ns}:". Its braces are a Redis Cluster hash tag: every key
-- below is built from it, so a script touches a single slot. ARGV[1] is how long a finished
-- job is kept, in milliseconds ("0": until pruned).
--
-- A script must not fail half-way: Redis does not roll back the writes already made. So each
-- one reads and checks everything first, and only calls commands that cannot fail.

local P = KEYS[1]
local RESULT_TTL = tonumber(ARGV[1])

-- The store's clock, as exact text ("sec.usec") and as a number.
local function clock()
  local t = redis.call('TIME')
  local text = t[1] .. '.' .. string.format('%06d', tonumber(t[2]))
  return text, tonumber(text)
end

-- A computed time as text that reads back as the same double (tostring keeps 14 digits).
local function num(x)
  return string.format('%.17g', x)
end

-- Optional arguments arrive as "" (none) or "=" followed by the value.
local function opt(v)
  if v == '' then return nil end
  return string.sub(v, 2)
end

-- Arguments per multi-member call: well below Lua's limit on unpack.
local CHUNK = 2000

-- `command` on `key` with the flat `args`, in calls of at most CHUNK arguments.
local function call_chunked(command, key, args)
  for first = 1, #args, CHUNK do
    redis.call(command, key, unpack(args, first, math.min(first + CHUNK - 1, #args)))
  end
end

-- Sorted-set adds collected per key, for one multi-member ZADD per key (zadd_all): per-job
-- calls are what a batch costs Redis.
local function zadd_later(zadds, key, score, member)
  local args = zadds[key]
  if not args then
    args = {}
    zadds[key] = args
  end
  args[#args + 1] = score
  args[#args + 1] = member
end

local function zadd_all(zadds)
  for key, args in pairs(zadds) do
    call_chunked('ZADD', key, args)
  end
end

local function job_key(id)
  return P .. 'job:' .. id
end

-- READY jobs live in one sorted set per (queue, handler name), so that claim can step over
-- a handler at its limit without scanning its backlog. The score is -priority; members are
-- the job's 16-digit enqueue sequence followed by its id, so equal scores keep FIFO order
-- exactly for any priority. The queue is escaped so that "a:b" + "c" and "a" + "b:c" differ.
local function ready_key(queue, name)
  local escaped = string.gsub(string.gsub(queue, '%%', '%%25'), ':', '%%3A')
  return P .. 'queue:' .. escaped .. ':' .. name
end

local function names_key(queue)
  return P .. 'names:' .. queue
end

local function ready_member(seq, id)
  return string.format('%016d', tonumber(seq)) .. id
end

local MEMBER_ID = '^' .. string.rep('%d', 16) .. '(.+)$'

local function member_id(member)
  return string.match(member, MEMBER_ID)
end

local function ready_score(priority)
  local score = -(tonumber(priority) or 0)
  if score == 0 then score = 0 end -- not "-0"
  return score
end

local function ready_add(queue, name, priority, seq, id)
  redis.call('ZADD', ready_key(queue, name), ready_score(priority), ready_member(seq, id))
  redis.call('SADD', names_key(queue), name)
end

local function ready_drop(key, queue, name, member)
  redis.call('ZREM', key, member)
  if redis.call('EXISTS', key) == 0 then
    redis.call('SREM', names_key(queue), name)
  end
end

local function ready_count(queue)
  local n = 0
  for _, name in ipairs(redis.call('SMEMBERS', names_key(queue))) do
    n = n + redis.call('ZCARD', ready_key(queue, name))
  end
  return n
end

local function live_count(queue)
  return ready_count(queue)
    + redis.call('ZCARD', P .. 'scheduled:' .. queue)
    + redis.call('ZCARD', P .. 'retrying:' .. queue)
    + tonumber(redis.call('HGET', P .. 'running_by_queue', queue) or '0')
end

-- An idle worker may leave a standing claim (next_due.lua): the hash 'waiter:<worker>' (its
-- lease, token prefix and limits) and its id in the set 'idle:<queue>' of each of its
-- queues. Enqueue can then lease a new job to it at once and push the job's claimed fields
-- to its list 'inbox:<worker>', on which it waits; its next claim ends the standing claim
-- and takes what the inbox holds.
local function waiter_key(worker)
  return P .. 'waiter:' .. worker
end

local function idle_key(queue)
  return P .. 'idle:' .. queue
end

local function inbox_key(worker)
  return P .. 'inbox:' .. worker
end

-- The fields of a claimed job, in the order claim returns them (records.claimed_records).
local CLAIMED_COUNT = 19

-- Wake one idle waiter of the queue (see wait_for_work); one pending token is enough.
local function wake(queue)
  local key = P .. 'wake:' .. queue
  if redis.call('LLEN', key) == 0 then
    redis.call('LPUSH', key, '1')
  end
end

local function decrement(key, field)
  if redis.call('HINCRBY', key, field, -1) <= 0 then
    redis.call('HDEL', key, field)
  end
end

local function set_or_clear(key, field, value)
  if value == nil then
    redis.call('HDEL', key, field)
  else
    redis.call('HSET', key, field, value)
  end
end

-- The job's hash key, handler name and queue if it is RUNNING under token, else nil.
local function held(id, token)
  local key = job_key(id)
  local f = redis.call('HMGET', key, 'state', 'token', 'name', 'queue')
  if f[1] ~= 'running' or f[2] ~= token then
    return nil
  end
  return key, f[3], f[4]
end

-- Remove a RUNNING job from the running indexes; the caller sets its new state.
local function leave_running(key, id, name, queue)
  redis.call('HDEL', key, 'lease_owner', 'lease_expires_at', 'token')
  redis.call('ZREM', P .. 'running', id)
  decrement(P .. 'running_by_name', name)
  decrement(P .. 'running_by_queue', queue)
  -- A claim left jobs of this handler READY because it was at its max concurrency: a slot
  -- is free now, so an idle worker should look again.
  local blocked = redis.call('HGET', P .. 'blocked', name)
  if blocked then
    redis.call('HDEL', P .. 'blocked', name)
    wake(blocked)
  end
end

-- Remove a queued job (READY, SCHEDULED or RETRYING) from its index; false otherwise.
local function unqueue(id, state, queue, name, seq)
  if state == 'ready' then
    ready_drop(ready_key(queue, name), queue, name, ready_member(seq, id))
  elseif state == 'scheduled' or state == 'retrying' then
    redis.call('ZREM', P .. state .. ':' .. queue, id)
  else
    return false
  end
  return true
end

local function release_unique(id, unique_key)
  if unique_key then
    local key = P .. 'unique:' .. unique_key
    if redis.call('GET', key) == id then
      redis.call('DEL', key)
    end
  end
end

-- Tell wait_finished callers that the job finished, if any watch it.
local function notify_finished(id)
  if redis.call('HDEL', P .. 'watch', id) == 1 then
    redis.call('PUBLISH', P .. 'events', id)
  end
end

-- Results larger than this many bytes are not published: the feed reads the job instead.
local RESULT_INLINE = 65536

-- Tell result feeds (redis/results.py) the job's outcome, while any listens anywhere: an
-- open feed keeps the key 'results:listening' alive, so with none a finish costs one EXISTS.
local function publish_result(key, id, queue, state, status, now_text)
  if redis.call('EXISTS', P .. 'results:listening') == 0 then return end
  local f = redis.call('HMGET', key, 'name', 'attempt', 'error', 'result')
  local message = {id = id, name = f[1], queue = queue, state = state,
    status = tonumber(status), attempt = tonumber(f[2]) or 0, finished_at = now_text}
  if f[3] then message.error = f[3] end
  if f[4] then
    if #f[4] <= RESULT_INLINE then message.result = f[4] else message.more = true end
  end
  redis.call('PUBLISH', P .. 'results', cjson.encode(message))
end

-- The job will not run again: SUCCEEDED, DEAD or CANCELLED. It frees its unique key and is
-- kept (with its idempotency key) for RESULT_TTL.
local function finish(key, id, queue, state, status, now_text)
  redis.call('HSET', key, 'state', state, 'status', status, 'finished_at', now_text)
  local f = redis.call('HMGET', key, 'unique_key', 'idempotency_key')
  release_unique(id, f[1])
  redis.call('ZADD', P .. 'finished', now_text, id)
  redis.call('ZADD', P .. state .. ':' .. queue, now_text, id)
  if RESULT_TTL > 0 then
    redis.call('PEXPIRE', key, RESULT_TTL)
    if f[2] then
      local idem = P .. 'idem:' .. f[2]
      if redis.call('GET', idem) == id then
        redis.call('PEXPIRE', idem, RESULT_TTL)
      end
    end
  end
  notify_finished(id)
  publish_result(key, id, queue, state, status, now_text)
end

-- A job whose cancel was asked for leaves RUNNING without its worker's ack (reap, release, retry):
-- it ends CANCELLED as an ack would end it (499, no result), never READY, so that the cancel
-- is not lost with its worker. The caller has taken it out of RUNNING (leave_running).
local function cancel_unacked(key, id, queue, now_text)
  redis.call('HDEL', key, 'result')
  redis.call('HSET', key, 'error', 'cancelled')
  finish(key, id, queue, 'cancelled', 499, now_text)
end

local FINISHED = {succeeded = true, dead = true, cancelled = true}

-- Delete a job that is not RUNNING or queued, and every index entry and key of it.
local function forget(key, id, state, queue, unique_key, idempotency_key)
  redis.call('DEL', key)
  redis.call('ZREM', P .. 'jobs', id)
  if FINISHED[state] then
    redis.call('ZREM', P .. 'finished', id)
    redis.call('ZREM', P .. state .. ':' .. queue, id)
  end
  release_unique(id, unique_key)
  if idempotency_key then
    local idem = P .. 'idem:' .. idempotency_key
    if redis.call('GET', idem) == id then
      redis.call('DEL', idem)
    end
  end
end

-- Finished jobs expire on their own (RESULT_TTL); drop the ids they leave in an index ordered
-- by finish time, oldest first, up to the first job that still exists.
local function sweep_expired(key, with_jobs)
  for _ = 1, 100 do
    local ids = redis.call('ZRANGE', key, 0, 9)
    if #ids == 0 then return end
    for _, id in ipairs(ids) do
      if redis.call('EXISTS', job_key(id)) == 1 then return end
      redis.call('ZREM', key, id)
      if with_jobs then
        redis.call('ZREM', P .. 'jobs', id)
      end
    end
  end
end

-- How many failed attempts a job's history keeps (base.HISTORY_LIMIT): the latest ones.
local HISTORY_LIMIT = 10

-- Append the attempt now ending to the job's history (the JSON list in field 'attempts';
-- see base.AttemptRecord): status nil for a lost worker; times as the clock's exact text.
local function record_attempt(key, status, err, traceback, finished_text)
  local f = redis.call('HMGET', key, 'attempts', 'attempt', 'started_at')
  local history = {}
  if f[1] then
    local ok, decoded = pcall(cjson.decode, f[1])
    if ok and type(decoded) == 'table' then history = decoded end
  end
  history[#history + 1] = {attempt = tonumber(f[2]) or 0, status = tonumber(status or ''),
    error = err, traceback = traceback, started_at = f[3] or nil, finished_at = finished_text}
  while #history > HISTORY_LIMIT do table.remove(history, 1) end
  redis.call('HSET', key, 'attempts', cjson.encode(history))
end

-- States given to an admin script as comma-separated text, as a set.
local function state_set(text)
  local set = {}
  for s in string.gmatch(text, '[^,]+') do set[s] = true end
  return set
end

-- Apply `act(id)` to the job `job_id` alone, or else to up to `chunk` jobs found in the
-- `states` indexes of `queue` (every queue when nil), the READY sets of handler `name` only
-- when given. `act` returns true when the job left the index it was found in. Returns
-- {jobs acted on, 1 if the chunk filled and more may match, else 0}.
local function for_matching(job_id, queue, name, states, chunk, act)
  if job_id then
    if act(job_id) then return {1, 0} end
    return {0, 0}
  end
  local acted = 0
  local function walk(key, ready)
    local pos = 0
    while acted < chunk do
      local entries = redis.call('ZRANGE', key, pos, pos + 99)
      if #entries == 0 then return end
      for _, entry in ipairs(entries) do
        if acted >= chunk then return end
        local id = entry
        if ready then id = member_id(entry) end
        if id and act(id) then
          acted = acted + 1
        else
          pos = pos + 1 -- stepped over: it stays in the index
        end
      end
    end
  end
  for _, q in ipairs(queue and {queue} or redis.call('SMEMBERS', P .. 'queues')) do
    for state in pairs(states) do
      if state == 'ready' then
        for _, n in ipairs(name and {name} or redis.call('SMEMBERS', names_key(q))) do
          walk(ready_key(q, n), true)
        end
      else
        walk(P .. state .. ':' .. q, false)
      end
    end
  end
  if acted >= chunk then return {acted, 1} end
  return {acted, 0}
end
