-- claim: promote the due jobs of the queues, then lease up to `limit` READY ones: queues in
-- the order given (paused ones skipped), within a queue by priority then enqueue order,
-- skipping the handlers at their max concurrency or out of rate tokens.
-- ARGV: ttl, worker id, limit, lease seconds, token prefix, limits (JSON name -> [max
-- concurrency, rate, burst], -1 for none), queue...
-- Returns {seconds until a rate-limited handler has a token again or "", {CLAIMED_FIELDS}...}.
local now_text, now = clock()
local worker, limit, lease, prefix = ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4]), ARGV[5]
local limits = cjson.decode(ARGV[6])
local queues = {}
for i = 7, #ARGV do queues[#queues + 1] = ARGV[i] end

-- Bounds the work of one call; what is left is promoted by the next claim.
local PROMOTE_BATCH = 1000
-- Extra passes over a queue, made only when bad entries were dropped in the previous pass.
local PASSES = 8

local claimed, blocked = {}, {}
-- Index writes of the leases, made once per key (flush_leases): the members leaving each
-- READY set, the running adds, and the running counts per handler and queue. admit counts a
-- handler's leases of this call from by_name.
local leaving, leaving_keys, running_adds, by_name, by_queue = {}, {}, {}, {}, {}
local token_wait = nil

local function promote(key)
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', key, '-inf', now_text, 'LIMIT', 0,
      PROMOTE_BATCH)) do
    redis.call('ZREM', key, id)
    local jk = job_key(id)
    local f = redis.call('HMGET', jk, 'state', 'name', 'queue', 'priority', 'seq')
    if f[1] == 'scheduled' or f[1] == 'retrying' then
      redis.call('HSET', jk, 'state', 'ready')
      ready_add(f[3], f[2], f[4], f[5], id)
    end
  end
end

-- Whether one more job of `name` may start now; with take, also takes a rate token. A
-- refused bucket is not written back: refilling later from the old state gives the same.
local function admit(name, queue, take)
  local lim = limits[name]
  if not lim then return true end
  local most, rate, burst = lim[1], lim[2], lim[3]
  local running = tonumber(redis.call('HGET', P .. 'running_by_name', name) or '0')
    + (by_name[name] or 0)
  if most >= 0 and running >= most then
    redis.call('HSET', P .. 'blocked', name, queue)
    return false
  end
  if rate < 0 then return true end
  local tokens, updated = burst, now -- a new bucket starts full
  local saved = redis.call('HGET', P .. 'buckets', name)
  if saved then
    local t, u = string.match(saved, '^(%S+) (%S+)$')
    tokens, updated = tonumber(t), tonumber(u)
  end
  tokens = math.min(burst, tokens + math.max(0, now - updated) * rate)
  if tokens < 1 then
    if rate > 0 then
      local wait = (1 - tokens) / rate
      if not token_wait or wait < token_wait then token_wait = wait end
    end
    return false
  end
  if take then
    redis.call('HSET', P .. 'buckets', name, num(tokens - 1) .. ' ' .. now_text)
  end
  return true
end

-- What a claim returns of each job, in this order (records.claimed_records reads it): the
-- fields a worker needs, without the ones a claim has just cleared.
local CLAIMED_FIELDS = {'id', 'name', 'queue', 'payload', 'headers', 'priority', 'timeout',
  'attempt', 'run_at', 'enqueued_at', 'started_at', 'lease_owner', 'lease_expires_at', 'token',
  'status', 'error', 'traceback', 'unique_key', 'idempotency_key'}

-- What a claim reads of a READY job before leasing it: its state, the CLAIMED_FIELDS the
-- lease does not write, and the fields it clears (from 'finished_at' on).
local READ_FIELDS = {'state', 'id', 'name', 'queue', 'payload', 'headers', 'priority',
  'timeout', 'attempt', 'run_at', 'enqueued_at', 'status', 'error', 'traceback', 'unique_key',
  'idempotency_key', 'finished_at', 'cancel_requested', 'checkin', 'checkin_at'}
local CLEARED_FROM = 17

-- Lease the job whose READ_FIELDS are f, which the caller has taken out of its READY set
-- (leave_ready): one HSET, an HDEL only of the fields it has, and its CLAIMED_FIELDS built
-- from f and what was written. The running indexes are written by flush_leases.
local function take_lease(jk, id, queue, name, f)
  local token = prefix .. '.' .. string.format('%x', #claimed + 1)
  local expires = num(now + lease)
  local attempt = tostring((tonumber(f[9]) or 0) + 1)
  redis.call('HSET', jk, 'state', 'running', 'token', token, 'lease_owner', worker,
    'lease_expires_at', expires, 'started_at', now_text, 'attempt', attempt)
  local clear = {}
  for i = CLEARED_FROM, #READ_FIELDS do
    if f[i] then clear[#clear + 1] = READ_FIELDS[i] end
  end
  if #clear > 0 then redis.call('HDEL', jk, unpack(clear)) end
  running_adds[#running_adds + 1] = expires
  running_adds[#running_adds + 1] = id
  by_name[name] = (by_name[name] or 0) + 1
  by_queue[queue] = (by_queue[queue] or 0) + 1
  claimed[#claimed + 1] = {f[2], f[3], f[4], f[5], f[6], f[7], f[8], attempt, f[10],
    f[11], now_text, worker, expires, token, f[12], f[13], f[14], f[15], f[16]}
end

-- ready_drop, deferred to flush_leases: the leased members leave their READY sets per key.
local function leave_ready(key, queue, name, member)
  local members = leaving[key]
  if not members then
    members = {}
    leaving[key] = members
    leaving_keys[#leaving_keys + 1] = {key, queue, name}
  end
  members[#members + 1] = member
end

-- The index writes of the leases taken so far, before anything reads those indexes again.
local function flush_leases()
  for _, k in ipairs(leaving_keys) do
    local key, queue, name = k[1], k[2], k[3]
    call_chunked('ZREM', key, leaving[key])
    if redis.call('EXISTS', key) == 0 then
      redis.call('SREM', names_key(queue), name)
    end
  end
  leaving, leaving_keys = {}, {}
  if #running_adds > 0 then
    call_chunked('ZADD', P .. 'running', running_adds)
    running_adds = {}
  end
end

local function printable(s)
  return (string.gsub(s, '[^%w%p ]', function(c)
    return string.format('\\x%02x', string.byte(c))
  end))
end

-- An entry of a READY set that is not a job: keep it as a DEAD record (status 400) that
-- admin can see, under its id if it has a plain one, and go on.
local function bury_garbage(queue, name, key, member, score, why)
  ready_drop(key, queue, name, member)
  local seq = redis.call('INCR', P .. 'seq')
  local id = member_id(member)
  if not id or #id > 200 or string.find(id, '[^%w%-_%.:]') then
    id = 'garbage-' .. seq
  end
  local jk = job_key(id)
  redis.call('DEL', jk)
  redis.call('HSET', jk, 'id', id, 'name', name, 'queue', queue, 'payload', '',
    'headers', '{}', 'priority', string.format('%.0f', -score), 'state', 'dead', 'attempt', 0,
    'run_at', now_text, 'enqueued_at', now_text, 'seq', seq,
    'error', "garbage in queue '" .. queue .. "': " .. why)
  redis.call('ZADD', P .. 'jobs', seq, id)
  finish(jk, id, queue, 'dead', 400, now_text)
end

local function by_rank(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end

-- Each unblocked handler of the queue offers its next `want` jobs and they are merged by
-- rank: no handler can give more than `want`, so the merge holds every job a plain walk
-- of the queue would take, without stepping over a blocked handler's backlog.
local function claim_from(queue)
  -- This claim sees whatever work a pending wake-up token announced: the token is spent
  -- (and passed on below if the claim fills up).
  redis.call('DEL', P .. 'wake:' .. queue)
  for _ = 1, PASSES do
    local want = limit - #claimed
    if want <= 0 then return end
    local heads = {}
    for _, name in ipairs(redis.call('SMEMBERS', names_key(queue))) do
      if not blocked[name] and not admit(name, queue, false) then
        blocked[name] = true
      end
      if not blocked[name] then
        local key = ready_key(queue, name)
        local got = redis.call('ZRANGE', key, 0, want - 1, 'WITHSCORES')
        if #got == 0 then redis.call('SREM', names_key(queue), name) end
        for i = 1, #got, 2 do
          heads[#heads + 1] = {tonumber(got[i + 1]), got[i], name, key}
        end
      end
    end
    if #heads == 0 then return end
    table.sort(heads, by_rank)
    local dropped = false
    for _, h in ipairs(heads) do
      if #claimed >= limit then break end
      local score, member, name, key = h[1], h[2], h[3], h[4]
      if not blocked[name] then
        local id = member_id(member)
        local jk = id and job_key(id)
        local f = id and redis.call('HMGET', jk, unpack(READ_FIELDS))
        local state = f and f[1]
        if not state then
          bury_garbage(queue, name, key, member, score,
            "no job '" .. printable(id or member) .. "'")
          dropped = true
        elseif state ~= 'ready' then
          ready_drop(key, queue, name, member) -- a stale entry: the job moved on
          dropped = true
        elseif not f[5] then
          bury_garbage(queue, name, key, member, score,
            "job '" .. printable(id) .. "' has no payload")
          dropped = true
        elseif not admit(name, queue, true) then
          blocked[name] = true
        else
          leave_ready(key, queue, name, member)
          take_lease(jk, id, queue, name, f)
        end
      end
    end
    flush_leases() -- the next pass reads the READY sets again
    if not dropped then return end
  end
end

for _, queue in ipairs(queues) do
  promote(P .. 'scheduled:' .. queue)
  promote(P .. 'retrying:' .. queue)
end
for _, queue in ipairs(queues) do
  if #claimed >= limit then break end
  if redis.call('SISMEMBER', P .. 'paused', queue) == 0 then
    claim_from(queue)
  end
end
flush_leases()
for name, count in pairs(by_name) do
  redis.call('HINCRBY', P .. 'running_by_name', name, count)
end
for queue, count in pairs(by_queue) do
  redis.call('HINCRBY', P .. 'running_by_queue', queue, count)
end
-- A full claim may have left work behind: pass the wake-up on to the next idle waiter.
if #claimed >= limit then
  for _, queue in ipairs(queues) do
    if redis.call('SISMEMBER', P .. 'paused', queue) == 0
        and redis.call('EXISTS', names_key(queue)) == 1 then
      wake(queue)
    end
  end
end
return {token_wait and num(token_wait) or '', claimed}
